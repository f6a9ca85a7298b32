"""Benchmark: what a training step of each method costs as the model grows, against GA's.

    python benchmarks/scale.py                              # 3M, 30M and 120M parameters
    python benchmarks/scale.py --sizes 3m --steps 4 --no-zero3 --no-eval

Models are OLMo with the default target's byte-level BPE tokenizer (2,048 tokens), randomly
initialised (this measures cost, not quality) at about 3M (the default target's shape), 30M and
120M parameters. Every installed loss method runs ``--steps`` optimiser steps with its default
config, plus NPO with a KL retain term (exact, top-k, cached, and under LoRA), KL with top-k and
cached, ReLearn with cached KL, and GD, KL, DPO, AltPO and NPO+KL with their retain terms
backpropagated apart (``trainer.backward = "per-term"``; any case takes the suffix " per-term"), each as
its own ``unlearn run`` process on ``--steps`` x ``--batch-size`` forget and retain rows of the
embedded default (one epoch, as a real run draws every forget row; a fifth of the rows for a
method that trains each row once per each of its 5 alternates). Per run: the median seconds of a
step after the first (``step_seconds`` in ``unlearn_run.json``; the first step also fills the
reference caches), the process's peak RSS and peak heap in use (glibc's mallinfo2, sampled),
each also as a ratio to GA and to GD (the same forget and retain passes without a reference),
and how many reference forward passes it ran and whether the reference was still in memory at
the end. With two ranks of ZeRO-3 (gloo, one thread each), the per-rank peaks of GA and NPO are
compared with a single process's (each rank taking ``--batch-size`` rows, and for GA also half as
many: the same global batch as the one process), both run with glibc's mmap threshold fixed (so
that freed tensors go back to the system and RSS counts memory in use), as peak RSS, peak RSS
above the process's start (torch and transformers imported: the runtime ZeRO cannot shard) and
peak heap. Finally the evaluator's rows per second at each size.
Prints Markdown tables; one run per cell (single seed, one machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods import MEASURED_CLI  # noqa: E402  (the benchmarks share the measured-process helper)

from unlearn.engine import PluginHost, free_port

# hidden size, layers, MLP width: about 3M (the default target), 30M and 120M parameters
SIZES = {"3m": (192, 4, 768), "30m": (384, 12, 1536), "120m": (768, 12, 3072)}
EXTRA = {
    "npo+kl": ["--method", "npo", "--set", "config.npo.retain_kl_weight=1.0"],
    "npo+kl top-k": ["--method", "npo", "--set", "config.npo.retain_kl_weight=1.0", "--set", "reference.kl=top-k"],
    "npo+kl+lora": ["--method", "npo", "--with", "lora", "--set", "config.npo.retain_kl_weight=1.0"],
    "kl top-k": ["--method", "kl", "--set", "reference.kl=top-k"],
    "npo+kl cached": ["--method", "npo", "--set", "config.npo.retain_kl_weight=1.0", "--set", "reference.kl=cached"],
    "kl cached": ["--method", "kl", "--set", "reference.kl=cached"],
    "relearn cached": ["--method", "relearn", "--set", "reference.kl=cached"],
}
# trainer.backward = "per-term": a method's retain terms backpropagated apart from its forget passes.
# Any case takes the suffix in --methods ("npo+kl cached per-term"); these run by default.
PER_TERM = " per-term"
PER_TERM_DEFAULT = ("gd", "kl", "dpo", "altpo", "npo+kl")


def build_model(tokenizer_source: Path, folder: Path, size: str) -> tuple[Path, int]:
    """An untrained OLMo of ``size`` with the given tokenizer (made once); returns (folder, parameters)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearn.bench.target import TargetSettings, new_model

    if not (folder / "config.json").is_file():
        hidden, layers, mlp = SIZES[size]
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
        settings = TargetSettings(hidden_size=hidden, layers=layers, heads=hidden // 64, intermediate_size=mlp)
        new_model(settings, tokenizer).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    return folder, sum(p.numel() for p in model.parameters())


def measured(
    args: list[str], nproc: int = 1, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """``unlearn ARGS`` as its own process (or ``nproc`` torchrun ranks): (result, peak RSS MB, peak
    heap MB, RSS MB once torch and transformers are imported); peaks the largest over the ranks,
    the start the smallest."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(MEASURED_CLI)  # the CLI reads its arguments from sys.argv
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env.update(env_extra or {})
        launcher = [sys.executable]
        if nproc > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
            launcher += ["--master_port", str(free_port())]
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // nproc))
        res = subprocess.run([*launcher, script.name, *args], capture_output=True, text=True, env=env)
    finally:
        os.unlink(script.name)
    found: dict[str, list[float]] = {"PEAK_RSS_KB": [], "PEAK_HEAP_KB": [], "BASE_RSS_KB": []}
    for line in res.stderr.splitlines():
        key, _, value = line.partition("=")
        if key in found and value.strip().isdigit():
            found[key].append(int(value) / 1024)
    peaks = [max(found[key], default=0.0) for key in ("PEAK_RSS_KB", "PEAK_HEAP_KB")]
    return res, *peaks, min(found["BASE_RSS_KB"], default=0.0)


def train(
    model: Path,
    data: Path,
    out: Path,
    extra: list[str],
    args: argparse.Namespace,
    nproc: int = 1,
    env_extra: dict[str, str] | None = None,
    batch_size: int | None = None,
) -> dict:
    cmd = ["run", "--model", str(model), "--data", str(data), "-o", str(out), "--overwrite", *extra]
    cmd += ["--max-steps", str(args.steps), "--batch-size", str(batch_size or args.batch_size), "--seed", "0"]
    cmd += ["--set", f"trainer.max_length={args.max_length}", "--set", "trainer.progress=false"]
    res, rss, heap, base = measured(cmd, nproc, env_extra)
    if res.returncode != 0:  # the CLI's one-line message, not torchrun's summary after it
        lines = res.stderr.strip().splitlines()
        said = [line for line in lines if line.startswith("error: ")]
        return {"error": (said or lines or [f"exit {res.returncode}"])[-1]}
    report = json.loads((out / "unlearn_run.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    step_s = report["step_seconds"]["median_after_first"]
    return {"step_s": step_s, "rss": rss, "heap": heap, "above_start": rss - base, **report}


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/scale"))
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"Comma-separated of {', '.join(SIZES)}.")
    parser.add_argument("--methods", help="Comma-separated loss methods and extra cases (default: all).")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--no-zero3", action="store_true", help="Skip the two-rank ZeRO-3 comparison.")
    parser.add_argument(
        "--zero3-config",
        default="zero3",
        help="The ZeRO-3 comparison's --deepspeed: the preset, or a DeepSpeed JSON file (e.g. one that sets "
        "sub_group_size, to compare with DeepSpeed's default).",
    )
    parser.add_argument(
        "--fixed-mmap",
        action="store_true",
        help="Run the single-process table with glibc's mmap threshold fixed, as the ZeRO-3 table is: freed "
        "tensors go back to the system, so RSS is memory in use (steps are slower: page faults).",
    )
    parser.add_argument("--no-eval", action="store_true", help="Skip the evaluator's rows per second.")
    parser.add_argument("--eval-rows", type=int, default=32)
    args = parser.parse_args()

    data = args.work / "data"
    if not (data / "forget_train.jsonl").is_file():
        from unlearn.bench.synth import generate

        generate(data, seed=0, size="small")
    tokenizer = args.work / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        from unlearn.bench.target import train_tokenizer, training_rows

        rows, _ = training_rows(data)
        train_tokenizer([r.text for r in rows], 2048).save_pretrained(tokenizer)
    host = PluginHost()
    losses = sorted(n for n, m in host.methods.items() if m.kind == "loss")
    cases = {name: ["--method", name] for name in losses} | EXTRA
    default = [*cases, *(f"{name}{PER_TERM}" for name in PER_TERM_DEFAULT)]
    cases |= {f"{name}{PER_TERM}": [*extra, "--set", "trainer.backward=per-term"] for name, extra in cases.items()}
    asked = args.methods.split(",") if args.methods else default
    cases = {k: v for k, v in cases.items() if k in asked}
    for base in ("ga", "gd"):
        cases.setdefault(base, ["--method", base])
    # One epoch in --steps steps, as in a real run (which draws every training item at least once;
    # a reference-based method's caches are filled for whole splits that fit the run). A method
    # that trains each forget row once per alternate (AltPO, ReLearn: 5) gets that many fewer rows.
    case_data = {}
    for name, extra in cases.items():
        per_row = host.methods[extra[extra.index("--method") + 1]].alternates_per_row
        rows = max(1, args.steps * args.batch_size // per_row)
        case_data[name] = train_data = args.work / f"data_{rows}"
        train_data.mkdir(parents=True, exist_ok=True)
        for split in ("forget", "retain"):
            lines = (data / f"{split}_train.jsonl").read_text().splitlines()[:rows]
            (train_data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")

    columns = ["model", "method", "s/step", "x GA", "x GD", "peak RSS MB", "x GA", "peak heap MB", "x GA", "x GD"]
    print("| " + " | ".join([*columns, "reference passes, kept"]) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    single: dict[str, dict] = {}
    models: dict[str, tuple[Path, int]] = {}
    for size in args.sizes.split(","):
        model, params = models[size] = build_model(tokenizer, args.work / f"olmo_{size}", size)
        label = f"{size} ({params / 1e6:.1f}M)"
        fixed = {"MALLOC_MMAP_THRESHOLD_": "131072"} if args.fixed_mmap else None
        results = {
            name: train(model, case_data[name], args.work / "out", extra, args, 1, fixed)
            for name, extra in cases.items()
        }
        ga, gd = results["ga"], results["gd"]
        single[size] = results
        for name, r in results.items():
            if "error" in r:
                print(f"| {label} | {name} | failed: {r['error'][:80]} | | | | | | | | |")
                continue
            ref = r.get("reference") or {}
            refs = f"{ref.get('forward_passes', 0)}, {'yes' if ref.get('kept') else 'no'}" if ref else "none"
            print(
                f"| {label} | {name} | {r['step_s']:.3f} | {ratio(r['step_s'], ga.get('step_s'))} | "
                f"{ratio(r['step_s'], gd.get('step_s'))} | {r['rss']:.0f} | {ratio(r['rss'], ga.get('rss'))} | "
                f"{r['heap']:.0f} | {ratio(r['heap'], ga.get('heap'))} | {ratio(r['heap'], gd.get('heap'))} | {refs} |"
            )
        sys.stdout.flush()

    if not args.no_zero3:
        size = args.sizes.split(",")[-1]
        model = models[size][0]
        threads = max(1, (os.cpu_count() or 2) // 2)
        print(f"\nZeRO-3, 2 ranks (gloo, {threads} thread each), {size}: per-rank peaks, against one process")
        print(
            "| method | one process: RSS / above start / heap MB | ZeRO-3 rank: RSS / above start / heap MB "
            "| ratio RSS / above start / heap | s/step: one, ZeRO-3 |"
        )
        print("| --- | --- | --- | --- | --- |")
        # Each rank takes --batch-size rows (twice one process's batch in all), and for GA also half
        # of them: the same global batch as one process, the same training split over two ranks.
        half = args.batch_size // 2
        runs = [(name, name, None) for name in ("ga", "npo") if name in cases]  # npo: if asked for
        runs += [(f"ga, {half} row{'s' * (half > 1)} per rank (the same global batch)", "ga", half)] if half else []
        one_process: dict[str, dict] = {}
        for label, name, per_rank in runs:
            # Both sides with a fixed mmap threshold: glibc otherwise keeps freed tensors' memory in
            # its arenas (about 1 GB per ZeRO-3 rank here), and RSS would count memory no longer in use.
            env = {"MALLOC_MMAP_THRESHOLD_": "131072"}
            if name not in one_process:
                one_process[name] = train(model, case_data[name], args.work / "out", cases[name], args, env_extra=env)
            one = one_process[name]
            z3_args = [*cases[name], "--deepspeed", args.zero3_config]
            z3 = train(model, case_data[name], args.work / "out", z3_args, args, 2, env, per_rank)
            if "error" in z3 or "error" in one:
                print(f"| {label} | failed: {(z3.get('error') or one.get('error'))[:80]} | | | |")
                continue
            cells = [" / ".join(f"{r[k]:.0f}" for k in ("rss", "above_start", "heap")) for r in (one, z3)]
            ratios = " / ".join(f"{z3[k] / one[k]:.2f}" for k in ("rss", "above_start", "heap"))
            print(f"| {label} | {cells[0]} | {cells[1]} | {ratios} | {one['step_s']:.2f}, {z3['step_s']:.2f} |")

    if not args.no_eval:
        from unlearn import load_rows

        subset = args.work / "eval_data"
        if not (subset / "forget.jsonl").is_file():
            subset.mkdir(parents=True, exist_ok=True)
            for split in ("forget", "retain"):
                rows = (data / f"{split}_train.jsonl").read_text().splitlines()[: args.eval_rows // 2]
                (subset / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
            load_rows(subset / "forget.jsonl")  # valid before timing anything
        print(f"\nEvaluator, {args.eval_rows} rows, 32 new tokens, float32, batch 64")
        print("| model | rows/s | seconds |")
        print("| --- | --- | --- |")
        for size, (model, params) in models.items():
            out = args.work / "eval_out"
            shutil.rmtree(out, ignore_errors=True)
            started = time.time()
            cmd = ["evaluate", str(model), "--data", str(subset), "--out", str(out), "--max-new-tokens", "32"]
            res, *_ = measured(cmd)
            if res.returncode != 0:
                print(f"| {size} | failed | {res.stderr.strip().splitlines()[-1][:80]} |")
                continue
            results = json.loads((out / "evaluation_results.json").read_text())
            print(
                f"| {size} ({params / 1e6:.1f}M) | {results['examples_per_second']:.1f} | {time.time() - started:.0f} |"
            )


if __name__ == "__main__":
    main()
