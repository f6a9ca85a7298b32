"""Benchmark: every installed loss plugin, with its default config, and every built-in recipe,
on the default tiny target.

    python benchmarks/methods.py                      # builds (or reuses) runs/bench/{data,target}
    python benchmarks/methods.py --methods ga,gd,npo --epochs 8 --lr 3e-4
    python benchmarks/methods.py --methods none --recipes zjuklab --variants npo+kl,npo+kl+lora

Each method, variant and recipe runs as its own `unlearn run` / `unlearn recipe run` process
(so its wall time and peak memory are its own), then is scored with the official SemEval-2025
Task 4 metrics against the target's own evaluation. Methods and variants share the trainer
settings below; recipes carry their own (scaled from the teams' published ones). Prints one
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from unlearn import PluginHost
from unlearn.evaluator.evaluate import RESULTS, evaluate_model
from unlearn.recipes import RESULT_FILE, builtin_recipes

# Methods whose schedule already holds the paper's epochs (SUGD: 7 per chunk) get one pass.
ONE_PASS = {"sugd": 1}

# Compositions measured beside the plain methods: NPO with a KL retain term holds a second,
# frozen copy of the model as its reference, except under LoRA, where the reference is the same
# network with the adapter switched off.
VARIANTS = {
    "npo+kl": ["--method", "npo", "--set", "config.npo.retain_kl_weight=1.0"],
    "npo+kl+lora": ["--method", "npo", "--with", "lora", "--set", "config.npo.retain_kl_weight=1.0"]
    + ["--set", "config.lora.rank=32", "--set", "config.lora.alpha=32"],
    # Fewer trainable weights need a larger step: GD with LoRA or with the last two layers at the
    # shared learning rate, and at the rate each plugin's README recommends for the tiny target.
    "gd+lora": ["--method", "gd", "--with", "lora"],
    "gd+lora@3e-3": ["--method", "gd", "--with", "lora", "--set", "trainer.learning_rate=3e-3"],
    "gd+layers": ["--method", "gd", "--with", "layers", "--set", "config.layers.last=2"],
    "gd+layers@1e-3": ["--method", "gd", "--with", "layers", "--set", "config.layers.last=2"]
    + ["--set", "trainer.learning_rate=1e-3"],
    # The layers README's example: the down projections of layers 2-3 only.
    "gd+down_proj": ["--method", "gd", "--with", "layers", "--set", "config.layers.layer_range=[2,3]"]
    + ["--set", "config.layers.pattern=down_proj"],
    "gd+down_proj@1e-3": ["--method", "gd", "--with", "layers", "--set", "config.layers.layer_range=[2,3]"]
    + ["--set", "config.layers.pattern=down_proj", "--set", "trainer.learning_rate=1e-3"],
}

# Runs the CLI and reports the process's peak resident memory and its peak heap in use (glibc's
# mallinfo2: bytes malloc'd and not yet freed, sampled every 5 ms; tensors live there) on the way
# out. RSS also counts the runtime's code and memory freed but kept by the allocator.
MEASURED_CLI = (
    "import ctypes, resource, sys, threading, time\n"
    "class _MI(ctypes.Structure):\n"
    "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',"
    " 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
    "_libc = ctypes.CDLL('libc.so.6'); _libc.mallinfo2.restype = _MI\n"
    "_peak = [0]\n"
    "def _sample():\n"
    "    while True:\n"
    "        m = _libc.mallinfo2(); _peak[0] = max(_peak[0], m.uordblks + m.hblkhd); time.sleep(0.005)\n"
    "threading.Thread(target=_sample, daemon=True).start()\n"
    "from unlearn.cli import main\n"
    "try:\n    main()\n"
    "finally:\n"
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report its parent's peak
    "    hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
    "    peak = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "    print(f'PEAK_RSS_KB={peak}', file=sys.stderr)\n"
    "    print(f'PEAK_HEAP_KB={_peak[0] // 1024}', file=sys.stderr)\n"
)


def measure(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run ``unlearn CMD...`` in its own process: (result, wall s, peak RSS MB, peak heap MB)."""
    started = time.time()
    res = subprocess.run([sys.executable, "-c", MEASURED_CLI, *cmd], capture_output=True, text=True)
    wall = time.time() - started
    found = {k: 0.0 for k in ("PEAK_RSS_KB", "PEAK_HEAP_KB")}
    for line in res.stderr.splitlines():
        key, _, value = line.partition("=")
        if key in found:
            found[key] = int(value) / 1024
    return res, wall, found["PEAK_RSS_KB"], found["PEAK_HEAP_KB"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/bench"), help="Data, target and runs live here.")
    parser.add_argument("--methods", help="Comma-separated loss methods (default: every installed one; 'none').")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"Comma-separated of {', '.join(VARIANTS)} ('none')."
    )
    parser.add_argument("--recipes", help="Comma-separated built-in recipes (default: all; 'none').")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data, target, before = args.work / "data", args.work / "target", args.work / "eval_target"
    if not (data / "utility.jsonl").is_file():
        from unlearn.bench.synth import generate

        generate(data, seed=0)
    if not (target / "target_card.json").is_file():
        from unlearn.bench.target import build_target

        build_target(data, target, overwrite=True, progress=False)
    if not (before / RESULTS).is_file():
        evaluate_model(target, data, before, progress=False)
    host = PluginHost()

    def chosen(value: str | None, default: list[str]) -> list[str]:
        return [] if value == "none" else value.split(",") if value else default

    methods = chosen(args.methods, sorted(n for n, e in host.methods.items() if e.kind == "loss"))
    jobs: list[tuple[str, list[str], Path]] = []
    for method in methods:
        jobs.append(
            (
                method,
                ["--method", method, "--epochs", str(ONE_PASS.get(method, args.epochs))],
                args.work / f"unlearned_{method}",
            )
        )
    for variant in chosen(args.variants, []):
        jobs.append((variant, [*VARIANTS[variant], "--epochs", str(args.epochs)], args.work / f"unlearned_{variant}"))
    common = ["--model", str(target), "--data", str(data), "--overwrite"]
    rows = []
    for label, extra, out in jobs:
        cmd = [
            "run",
            *extra,
            *common,
            "-o",
            str(out),
            "--lr",
            str(args.lr),
            "--seed",
            str(args.seed),
            "--set",
            "trainer.progress=false",
        ]
        rows.append(_measure(label, cmd, out, out, data, before, args.work))
    for recipe in chosen(args.recipes, sorted(builtin_recipes())):
        out = args.work / f"recipe_{recipe}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["recipe", "run", recipe, *common[:-1], "-o", str(out)]
        rows.append(_measure(f"recipe: {recipe}", cmd, out, out / "__final__", data, before, args.work))
    target_results = json.loads((before / RESULTS).read_text())
    print(
        f"\nmethods and variants: epochs {args.epochs} (1 pass for {', '.join(ONE_PASS)}), lr {args.lr}, "
        f"seed {args.seed}, plugin default configs; recipes: their own settings\n"
    )
    print(
        "| method | task aggregate | MIA AUC | MIA score | utility | gate | final score | run wall s "
        "| peak RSS MB | peak heap MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    t = target_results
    print(
        f"| (target) | {t['harmonic-mean-task-aggregate']:.3f} | {t['mia_loss_acc']:.3f} "
        f"| {t['mia_final_score']:.3f} | "
        f"{t['mmlu_average']:.3f} | | {t['aggregate-score']:.3f} | | | |"
    )
    for method, r, wall, peak, heap, error, _ in rows:
        if r is None:
            print(f"| {method} | failed: {error} | | | | | | {wall:.0f} | {peak:.0f} | {heap:.0f} |")
            continue
        gate = "pass" if r["utility_gate"]["pass"] else "FAIL"
        print(
            f"| {method} | {r['harmonic-mean-task-aggregate']:.3f} | {r['mia_loss_acc']:.3f} "
            f"| {r['mia_final_score']:.3f} | "
            f"{r['mmlu_average']:.3f} | {gate} | {r['aggregate-score']:.3f} | {wall:.0f} | {peak:.0f} | {heap:.0f} |"
        )
    print("\nThe run's probe of its first forget answers: rows reproduced by greedy decoding and mean token NLL")
    print("(a run warns when it lost none of the reproduced rows):\n")
    print("| run | reproduced before | after | NLL before | after |")
    print("| --- | --- | --- | --- | --- |")
    for method, *_, probe in rows:
        if probe and probe["after"] is not None:
            b, a = probe["before"], probe["after"]
            print(
                f"| {method} | {b['reproduces']:.0f}/{probe['rows']} | {a['reproduces']:.0f}/{probe['rows']} "
                f"| {b['nll']:.3f} | {a['nll']:.3f} |"
            )


def _measure(label: str, cmd: list[str], out: Path, model: Path, data: Path, before: Path, work: Path) -> tuple:
    """Run one CLI command in its own process; evaluate the model it wrote (a recipe's: from recipe.json)."""
    res, wall, peak, heap = measure(cmd)
    if res.returncode != 0:
        lines = [line for line in res.stderr.strip().splitlines() if not line.startswith("PEAK_")] or ["?"]
        return (label, None, wall, peak, heap, lines[-1][:80], None)
    report = out / "unlearn_run.json"
    change = json.loads(report.read_text()).get("forget_probe") if report.is_file() else None
    if model.name == "__final__":
        model = Path(json.loads((out / RESULT_FILE).read_text())["model"])
    name = label.replace("recipe: ", "recipe_")
    return (
        label,
        evaluate_model(model, data, work / f"eval_{name}", baseline=before, progress=False),
        wall,
        peak,
        heap,
        "",
        change,
    )


if __name__ == "__main__":
    main()
