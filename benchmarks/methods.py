"""Benchmark: every installed loss plugin, with its default config, and every built-in recipe,
on the default tiny target, beside the oracle (the same model retrained without the forget set).

    python benchmarks/methods.py                      # builds (or reuses) runs/bench/{data,target,oracle}
    python benchmarks/methods.py --methods ga,gd,npo --epochs 8 --lr 3e-4
    python benchmarks/methods.py --methods none --recipes zjuklab --variants npo+kl,npo+kl+lora
    python benchmarks/methods.py --methods gd,idk,relearn --variants none --recipes none --relearn
    python benchmarks/methods.py --benchmark tofu --methods ga,gd,npo,simnpo --variants none --recipes none
    python benchmarks/methods.py --tuned --methods gd,npo   # tuned, on held-out seeds: benchmarks/tuned.py

On LUME every evaluation takes the oracle's as `--reference` (its report gains the oracle column)
and the table shows the gap of each final score to the oracle's. On TOFU and MUSE (work folder
runs/bench-tofu, runs/bench-muse) the table shows each benchmark's headline numbers, TOFU's
forget quality and MUSE's PrivLeak measured against that oracle.

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

from unlearn.engine import PluginHost
from unlearn.evaluator.evaluate import RESULTS, evaluate_model
from unlearn.recipes import RESULT_FILE, builtin_recipes

BENCHMARK = {"name": "lume", "oracle": None, "relearn": False}  # set in main(); _evaluate reads it

# Methods whose schedule already holds the paper's epochs (SUGD: 7 per chunk) get one pass.
ONE_PASS = {"sugd": 1}


def epochs_for(method: str, epochs: float, host: PluginHost) -> float:
    """The shared epochs, one pass for ONE_PASS methods, and for a method that trains each forget
    row once per alternate (AltPO, ReLearn: 5) the shared epochs over that many: the same number of
    optimiser steps as the others, as AltPO's authors ran 2 epochs of 5 alternates against 10."""
    return ONE_PASS.get(method, epochs / host.methods[method].alternates_per_row)


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
    "import torch, transformers  # noqa\n"  # the libraries every run loads: the start of its own memory
    'print(f\'BASE_RSS_KB={[l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]}\','
    " file=sys.stderr)\n"
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
    if "--tuned" in sys.argv:  # the tuned, multi-seed table: benchmarks/tuned.py
        sys.argv.remove("--tuned")
        sys.path.insert(0, str(Path(__file__).parent))
        import tuned

        return tuned.main()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="lume", help="lume | tofu | muse (any installed benchmark).")
    parser.add_argument("--size", default="small", help="The benchmark's size: tiny | small | medium.")
    parser.add_argument(
        "--work", type=Path, help="Data, target, oracle and runs live here (default runs/bench[-NAME])."
    )
    parser.add_argument("--methods", help="Comma-separated loss methods (default: every installed one; 'none').")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"Comma-separated of {', '.join(VARIANTS)} ('none')."
    )
    parser.add_argument("--recipes", help="Comma-separated built-in recipes (default: all; 'none').")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--relearn", action="store_true", help="LUME: also ReLearn's KFR, KRR and linguistic scores (a second table)."
    )
    args = parser.parse_args()
    from unlearn.bench.target import build_target

    host = PluginHost()
    bench = host.benchmark(args.benchmark)
    args.work = args.work or Path("runs/bench" if args.benchmark == "lume" else f"runs/bench-{args.benchmark}")
    data, target, oracle = args.work / "data", args.work / "target", args.work / "oracle"
    before, ideal = args.work / "eval_target", args.work / "eval_oracle"
    if not (data / "forget.jsonl").is_file() and not (data / "forget_train.jsonl").is_file():
        bench.synthesize(data, 0, args.size)
    for model, is_oracle in ((target, False), (oracle, True)):
        if not (model / "target_card.json").is_file():
            build_target(data, model, overwrite=True, progress=False, oracle=is_oracle)
    BENCHMARK.update(name=args.benchmark, oracle=oracle, relearn=args.relearn)
    for model, evaluation in ((oracle, ideal), (target, before)):
        done = json.loads((evaluation / RESULTS).read_text()) if (evaluation / RESULTS).is_file() else None
        if done is None or (args.relearn and "relearn" not in done):
            _evaluate(model, data, evaluation, None)

    def chosen(value: str | None, default: list[str]) -> list[str]:
        return [] if value == "none" else value.split(",") if value else default

    methods = chosen(args.methods, sorted(n for n, e in host.methods.items() if e.kind == "loss"))
    jobs: list[tuple[str, list[str], Path]] = []
    for method in methods:
        jobs.append(
            (
                method,
                ["--method", method, "--epochs", str(epochs_for(method, args.epochs, host))],
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
    if args.benchmark != "lume":
        _headline_table(
            bench, [("(target)", target_results), ("(oracle)", json.loads((ideal / RESULTS).read_text()))], rows
        )
        return
    oracle_results = json.loads((ideal / RESULTS).read_text())
    print(
        f"\nmethods and variants: epochs {args.epochs} (1 pass for {', '.join(ONE_PASS)}; over the alternates per "
        f"row for methods that train each row once per alternate), lr {args.lr}, "
        f"seed {args.seed}, plugin default configs; recipes: their own settings\n"
    )
    print(
        "| method | task aggregate | MIA AUC | MIA score | utility | gate | final score | gap to oracle "
        "| run wall s | peak RSS MB | peak heap MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, t in (("(target)", target_results), ("(oracle)", oracle_results)):
        print(
            f"| {name} | {t['harmonic-mean-task-aggregate']:.3f} | {t['mia_loss_acc']:.3f} "
            f"| {t['mia_final_score']:.3f} | {t['mmlu_average']:.3f} | | {t['aggregate-score']:.3f} "
            f"| {t['aggregate-score'] - oracle_results['aggregate-score']:+.3f} | | | |"
        )
    for method, r, wall, peak, heap, error, _ in rows:
        if r is None:
            print(f"| {method} | failed: {error} | | | | | | | {wall:.0f} | {peak:.0f} | {heap:.0f} |")
            continue
        gate = "pass" if r["utility_gate"]["pass"] else "FAIL"
        print(
            f"| {method} | {r['harmonic-mean-task-aggregate']:.3f} | {r['mia_loss_acc']:.3f} "
            f"| {r['mia_final_score']:.3f} | {r['mmlu_average']:.3f} | {gate} | {r['aggregate-score']:.3f} "
            f"| {r['oracle_gap']['aggregate-score']:+.3f} | {wall:.0f} | {peak:.0f} | {heap:.0f} |"
        )
    if args.relearn:
        print(
            "\nReLearn's metrics (`unlearn evaluate --relearn`; entities only, no NLI judge; PPL under each model):\n"
        )
        print("| method | KFR | KRR | LS forget | LS retain | PPL forget | PPL retain |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        named = [("(target)", target_results), ("(oracle)", oracle_results)] + [(m, r) for m, r, *_ in rows if r]
        for name, r in named:
            m = r["relearn"]
            cells = [m[k] for k in ("KFR", "KRR", "LS_F", "LS_R", "PPL_F", "PPL_R")]
            print(f"| {name} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")
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
    return (label, _evaluate(model, data, work / f"eval_{name}", before), wall, peak, heap, "", change)


def _evaluate(model: Path, data: Path, out: Path, before: Path | None) -> dict:
    """The chosen benchmark's evaluation; on LUME against the target's (gate) and the oracle's."""
    oracle = BENCHMARK["oracle"]
    if BENCHMARK["name"] == "lume":
        reference = None if model == oracle else oracle.parent / "eval_oracle"
        return evaluate_model(
            model, data, out, baseline=before, reference=reference, progress=False, relearn=BENCHMARK["relearn"]
        )
    bench = PluginHost().benchmark(BENCHMARK["name"])
    return bench.evaluate(model, data, out, reference=oracle, progress=False)


def _headline_table(bench: object, fixed: list[tuple[str, dict]], rows: list[tuple]) -> None:
    keys = list(bench.headline)
    print("| method | " + " | ".join(f"{k} ({bench.headline[k]} is better)" for k in keys) + " | run wall s |")
    print("| --- " * (len(keys) + 2) + "|")
    for name, r in fixed:
        print(f"| {name} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " | |")
    for method, r, wall, *_ in rows:
        cells = [_fmt(r.get(k)) for k in keys] if r else ["failed"] + [""] * (len(keys) - 1)
        print(f"| {method} | " + " | ".join(cells) + f" | {wall:.0f} |")


def _fmt(value: object) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
