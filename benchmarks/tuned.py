"""Benchmark: methods tuned with `unlearn tune` on one instance of the embedded default, then
re-run on held-out instances (fresh synthetic seeds, each with its own target and oracle) with
their tuned settings and with the shared untuned settings of the methods table, mean +- std.

    python benchmarks/tuned.py                                  # every entry below, 20 trials each
    python benchmarks/tuned.py --methods gd,npo --trials 20 --jobs 2 --seeds 1,2,3
    python benchmarks/methods.py --tuned ...                    # the same
    python benchmarks/tuned.py --methods gd+layers --instance-seeds 4 --studies runs/tuned2   # 2 instances
    python benchmarks/tuned.py --methods npo --studies runs/tuned_margin \
        --constraint 'utility >= 0.85 * initial_utility'               # a utility margin
    python benchmarks/tuned.py --methods none --recipes all            # built-in recipes, as shipped

The tuning instance is runs/bench (seed 0, what `benchmarks/methods.py` builds); studies live in
runs/tuned/NAME (resumable: run the same command again), held-out instances in
runs/holdout/seed-S (shared by every study). Each study is one `unlearn tune` process, timed; the
held-out runs are a second call of the same command (the study already has its trials). Prints
one Markdown table; the oracle's row is the same model retrained without the forget set.

`--recipes` adds a second table: each built-in recipe with the settings it ships (nothing tuned
here), run by `unlearn recipe run` on the tuning instance and on each held-out one, timed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from unlearn.engine import get_host
from unlearn.evaluator.evaluate import RESULTS, evaluate_model
from unlearn.recipes import RESULT_FILE, builtin_recipes
from unlearn.tune.study import build_instance

# The shared, untuned settings of benchmarks/methods.py, the base every study starts from, and
# the learning rates that move the tiny target at all (the trainer's declared range starts at
# 1e-5, for billion-parameter models); the official score with generation every 4 epochs.
SHARED = ["--set", "trainer.epochs=8", "--set", "trainer.learning_rate=3e-4", "--set", "seed=0"]
SHARED += ["--space", "trainer.learning_rate={low=1e-4, high=3e-3, log=true}", "--report-epochs", "4"]
# Entries beyond the plain methods: (loss method, extra arguments of `unlearn tune`).
VARIANTS = {
    "gd+layers": (
        "gd",
        ["--with", "layers", "--set", "config.layers.last=2", "--space", "config.layers.last=[1, 2, 3]"],
    ),
    "npo+kl": ("npo", ["--set", "config.npo.retain_kl_weight=1.0"]),
    # SUGD's schedule holds its epochs (config.sugd.epochs_per_chunk): one pass, as in the methods
    # table; the shared 8 passes times up to 12 epochs per chunk made one trial take 10 minutes.
    "sugd": ("sugd", ["--set", "trainer.epochs=1", "--space", "trainer.epochs=false"]),
    # Mr. Snuffleupagus's adaptive RMU (the built-in recipe's settings as the base, its step size and
    # norm scale searched; the steering coefficient is unused when adaptive).
    "rmu+adaptive": (
        "rmu",
        ["--set", "config.rmu.adaptive=true", "--set", "config.rmu.layer=3", "--set", "trainer.learning_rate=3e-2"]
        + [
            "--space",
            "trainer.learning_rate={low=3e-3, high=1e-1, log=true}",
            "--space",
            "config.rmu.steering_coeff=false",
        ]
        + ["--space", "config.rmu.adaptive_scale={low=2, high=30, log=true}"],
    ),
    "flood+layers": (
        "flood",
        ["--with", "layers", "--set", "config.layers.last=2", "--space", "config.layers.last=[1, 2, 3]"],
    ),
}
KEYS = ("aggregate-score", "harmonic-mean-task-aggregate", "mia_final_score", "mmlu_average")


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {std:.3f}"


def tune(name: str, method: str, extra: list[str], args: argparse.Namespace, holdout: bool) -> float:
    """One `unlearn tune` call for the entry ``name``; returns its wall seconds."""
    command = [sys.executable, "-m", "unlearn", "tune", "-o", str(args.studies / name), "--no-progress"]
    command += ["--model", str(args.bench / "target"), "--data", str(args.bench / "data"), "--method", method]
    command += [*SHARED, *extra, "--trials", str(args.trials), "--jobs", str(args.jobs)]
    command += ["--holdout-dir", str(args.work / "holdout")]
    command += [a for c in args.constraint for a in ("--constraint", c)]
    if args.instance_seeds:
        command += ["--instance-seeds", args.instance_seeds]
    if holdout:
        command += ["--holdout-seeds", args.seeds]
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: unlearn tune failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return time.time() - started


def oracle_rows(args: argparse.Namespace, seeds: list[int]) -> dict[str, list[dict]]:
    """The target's and the oracle's official numbers on each held-out instance."""
    from unlearn.bench.target import TargetSettings, build_target

    lume = get_host().benchmark("lume")
    rows: dict[str, list[dict]] = {"(target)": [], "(oracle)": []}
    for seed in seeds:
        where = args.work / "holdout" / f"seed-{seed}"
        data, target, baseline = build_instance(where, seed, "small", lume, None)
        oracle, ideal = where / "oracle", where / "eval_oracle"
        if not (oracle / "target_card.json").is_file():
            build_target(data, oracle, TargetSettings(seed=seed), overwrite=True, progress=False, oracle=True)
        if not (ideal / RESULTS).is_file():
            evaluate_model(oracle, data, ideal, progress=False)
        for name, folder in (("(target)", baseline), ("(oracle)", ideal)):
            found = json.loads((folder / RESULTS).read_text())
            rows[name].append({k: found.get(k) for k in KEYS} | {"gate": None})
    return rows


def recipe_lines(names: list[str], args: argparse.Namespace, seeds: list[int]) -> list[str]:
    """Each built-in recipe as shipped, on the tuning instance (seed 0) and the held-out ones; a
    finished evaluation (``INSTANCE/eval_recipe_NAME``, with the run's wall time) is reused."""
    lines = [
        "| recipe | held out: final score | MIA score | utility | gate | seed 0 (tuning instance): final score "
        "| gate | recipe wall s per instance |",
        "| --- " * 8 + "|",
    ]
    for name in names:
        runs = []
        for seed in [0, *seeds]:
            where = args.bench if seed == 0 else args.work / "holdout" / f"seed-{seed}"
            data, target, baseline = where / "data", where / "target", where / "eval_target"
            out, evaluation = where / f"recipe_{name}", where / f"eval_recipe_{name}"
            if not (evaluation / RESULTS).is_file():
                command = [sys.executable, "-m", "unlearn", "recipe", "run", name, "--model", str(target)]
                ours = not out.exists()  # benchmarks/methods.py writes recipe_NAME under runs/bench too
                started = time.time()
                done = subprocess.run([*command, "--data", str(data), "-o", str(out)], capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"recipe {name}, seed {seed}: {(done.stderr or done.stdout).strip()[-300:]}")
                wall = time.time() - started
                model = Path(json.loads((out / RESULT_FILE).read_text())["model"])
                evaluate_model(model, data, evaluation, baseline=baseline, progress=False)
                (evaluation / "recipe_wall_s.json").write_text(json.dumps({"wall_s": wall}))
                if ours:  # the recipe's models, made here; the scores are kept
                    shutil.rmtree(out)
            found = json.loads((evaluation / RESULTS).read_text())
            wall = json.loads((evaluation / "recipe_wall_s.json").read_text())["wall_s"]
            runs.append({k: found.get(k) for k in KEYS} | {"gate": found["utility_gate"]["pass"], "wall": wall})
        first, held = runs[0], runs[1:]
        cells = [mean_std([r[k] for r in held]) for k in ("aggregate-score", "mia_final_score", "mmlu_average")]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {sum(bool(r['gate']) for r in held)}/{len(held)} "
            f"| {first['aggregate-score']:.3f} | {'pass' if first['gate'] else 'FAIL'} "
            f"| {statistics.mean(r['wall'] for r in runs):.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", help="Comma-separated entries (loss methods or VARIANTS); default: all.")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", default="1,2,3", help="Held-out seeds.")
    parser.add_argument("--work", type=Path, default=Path("runs"))
    parser.add_argument(
        "--instance-seeds", default="", help="More tuning instances beside seed 0 (every trial runs on each): 4"
    )
    parser.add_argument("--constraint", action="append", default=[], help="Instead of the utility gate (repeatable).")
    parser.add_argument("--studies", type=Path, help="Where the studies live (default WORK/tuned).")
    parser.add_argument("--recipes", default="none", help="Built-in recipes as shipped, a second table: all | A,B")
    args = parser.parse_args()
    args.bench = args.work / "bench"
    args.studies = args.studies or args.work / "tuned"
    host = get_host()
    names = (
        []
        if args.methods == "none"
        else args.methods.split(",")
        if args.methods
        else sorted({m for m, info in host.methods.items() if info.kind == "loss"} | set(VARIANTS))
    )
    recipes = (
        []
        if args.recipes == "none"
        else sorted(builtin_recipes())
        if args.recipes == "all"
        else args.recipes.split(",")
    )
    seeds = [int(s) for s in args.seeds.split(",")]
    build_instance(args.bench, 0, "small", host.benchmark("lume"), None)  # the tuning instance
    reference = oracle_rows(args, seeds)
    lines = [
        "| method | tuned: final score | MIA score | utility | gate | untuned: final score | gate | trials "
        "(complete / pruned) | tuning wall min | settings found |",
        "| --- " * 10 + "|",
    ]
    for name, runs in reference.items():
        cells = [mean_std([r[k] for r in runs]) for k in ("aggregate-score", "mia_final_score", "mmlu_average")]
        lines.append(f"| {name} | " + " | ".join(cells) + " | | | | | | |")
    for name in names:
        method, extra = VARIANTS.get(name, (name, []))
        folder = args.studies / name
        timing = folder / "tuning_wall_s.json"
        if not timing.is_file():
            json.dump({"wall_s": tune(name, method, extra, args, holdout=False)}, timing.open("w"))
        tune(name, method, extra, args, holdout=True)
        summary = json.loads((folder / "summary.json").read_text())
        wall = json.loads(timing.read_text())["wall_s"] / 60
        trials = f"{summary['trials']['complete']} / {summary['trials']['pruned']}"
        if summary["best"] is None:
            lines.append(f"| {name} | no feasible trial | | | | | | {trials} | {wall:.0f} | |")
            continue
        tuned, untuned = (summary["holdout"]["runs"][k] for k in ("tuned", "untuned"))
        found = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                          for k, v in summary["best"]["params"].items())  # fmt: skip
        lines.append(
            f"| {name} | {mean_std([r['aggregate-score'] for r in tuned])} "
            f"| {mean_std([r['mia_final_score'] for r in tuned])} | {mean_std([r['mmlu_average'] for r in tuned])} "
            f"| {sum(bool(r['gate']) for r in tuned)}/{len(tuned)} "
            f"| {mean_std([r['aggregate-score'] for r in untuned])} "
            f"| {sum(bool(r['gate']) for r in untuned)}/{len(untuned)} | {trials} | {wall:.0f} | {found} |"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))
    if recipes:
        print("\n".join(["", *recipe_lines(recipes, args, seeds)]))


if __name__ == "__main__":
    main()
