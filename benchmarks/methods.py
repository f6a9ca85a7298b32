"""Benchmark: every installed loss plugin, with its default config, on the default tiny target.

    python benchmarks/methods.py                      # builds (or reuses) runs/bench/{data,target}
    python benchmarks/methods.py --methods ga,gd,npo --epochs 8 --lr 3e-4

Each method runs as its own `unlearn run` process (so its wall time and peak memory are its
own) with the same trainer settings, then is scored with the official SemEval-2025 Task 4
metrics against the target's own evaluation. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from unlearn.evaluator.evaluate import RESULTS, evaluate_model
from unlearn.plugins import PluginHost

# Methods whose schedule already holds the paper's epochs (SUGD: 7 per chunk) get one pass.
ONE_PASS = {"sugd": 1}

# Runs the CLI and reports the process's peak resident memory on the way out.
_MEASURED_CLI = (
    "import resource, sys\n"
    "from unlearn.cli import main\n"
    "try:\n    main()\n"
    "finally:\n"
    "    print(f'PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr)\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/bench"), help="Data, target and runs live here.")
    parser.add_argument("--methods", help="Comma-separated loss methods (default: every installed one).")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data, target, before = args.work / "data", args.work / "target", args.work / "eval_target"
    if not (data / "utility.jsonl").is_file():
        from unlearn.synth import generate

        generate(data, seed=0)
    if not (target / "target_card.json").is_file():
        from unlearn.target import build_target

        build_target(data, target, overwrite=True, progress=False)
    if not (before / RESULTS).is_file():
        evaluate_model(target, data, before, progress=False)
    host = PluginHost()
    methods = args.methods.split(",") if args.methods else sorted(n for n, e in host.entries.items() if e.kind == "loss")
    rows = []
    for method in methods:
        out = args.work / f"unlearned_{method}"
        epochs = ONE_PASS.get(method, args.epochs)
        cmd = [sys.executable, "-c", _MEASURED_CLI, "run", "--method", method, "--model", str(target), "--data", str(data),
               "-o", str(out), "--epochs", str(epochs), "--lr", str(args.lr), "--seed", str(args.seed),
               "--overwrite", "--set", "trainer.progress=false"]
        started = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - started
        peak = next((int(l.split("=")[1]) for l in res.stderr.splitlines() if l.startswith("PEAK_RSS_KB=")), 0) / 1024
        if res.returncode != 0:
            rows.append((method, None, wall, peak, res.stderr.strip().splitlines()[-2][:80]))
            continue
        results = evaluate_model(out, data, args.work / f"eval_{method}", baseline=before, progress=False)
        rows.append((method, results, wall, peak, ""))
    target_results = json.loads((before / RESULTS).read_text())
    print(f"\ntrainer: epochs {args.epochs} (1 pass for {', '.join(ONE_PASS)}), lr {args.lr}, "
          f"seed {args.seed}; method configs: plugin defaults\n")
    print("| method | task aggregate | MIA AUC | MIA score | utility | gate | final score | run wall s | peak MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    t = target_results
    print(f"| (target) | {t['harmonic-mean-task-aggregate']:.3f} | {t['mia_loss_acc']:.3f} | {t['mia_final_score']:.3f} | "
          f"{t['mmlu_average']:.3f} | | {t['aggregate-score']:.3f} | | |")
    for method, r, wall, peak, error in rows:
        if r is None:
            print(f"| {method} | failed: {error} | | | | | | {wall:.0f} | {peak:.0f} |")
            continue
        gate = "pass" if r["utility_gate"]["pass"] else "FAIL"
        print(f"| {method} | {r['harmonic-mean-task-aggregate']:.3f} | {r['mia_loss_acc']:.3f} | {r['mia_final_score']:.3f} | "
              f"{r['mmlu_average']:.3f} | {gate} | {r['aggregate-score']:.3f} | {wall:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
