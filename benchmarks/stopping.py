"""Benchmark: calibrated stopping on held-out instances. A built-in recipe (`tuned_gd_layers` unless
`--recipe` names another) runs as shipped (the last step kept) and with evaluation during training
every epoch and a best step kept by `trainer.best_by`, on fresh instances of the embedded default
(each its own synthetic benchmark and target, shared with benchmarks/tuned.py), officially
evaluated; mean +- std.

    python benchmarks/stopping.py                       # seeds 1,2,3, every variant below
    python benchmarks/stopping.py --seeds 1,2,3,4 --variants last,score
    python benchmarks/stopping.py --recipe tuned_rmu --seeds 1,2,3,4,5,6 --variants last,score

Each run is what `unlearn recipe run RECIPE --set defaults.trainer.best_by=...` does.
The signals are read on the validation rows (`trainer.eval_split`): 20 forget and 20 retain rows,
6 member and 6 non-member documents; the utility signal is the exact match on `utility.jsonl`,
the file the official utility is measured on, so a criterion using it selects on the gate
itself (as a SemEval team measuring MMLU while it trains would). Finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from unlearn import write_json
from unlearn.engine import apply_sets, get_host
from unlearn.recipes.recipe import find_recipe, load_recipe, run_recipe
from unlearn.tune.study import build_instance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tuned import KEYS, mean_std  # noqa: E402  (the held-out table's numbers and their format)

# 80 forget rows / batch 4 (both tuned recipes' batch size)
EVERY_EPOCH = ["defaults.trainer.eval_steps=20", "defaults.trainer.score_steps=20"]
VARIANTS = {
    "last": [],  # as shipped: the last step
    # the step best by the official final score on the validation rows, among those passing the gate
    "score": [*EVERY_EPOCH, "defaults.trainer.best_by=score - (utility < 0.75 * initial_utility)"],
    # the most-forgotten step (forget answer NLL) among those passing the gate
    "forgotten": [*EVERY_EPOCH, "defaults.trainer.best_by=forget_nll * (utility >= 0.75 * initial_utility)"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="tuned_gd_layers", help="a built-in recipe of one run, batch size 4")
    parser.add_argument("--seeds", default="1,2,3", help="held-out instance seeds")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument(
        "--work", type=Path, default=Path("runs"), help="instances in WORK/holdout/seed-S, runs in WORK/stopping"
    )
    args = parser.parse_args()
    host = get_host()
    lume = host.benchmark("lume")
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| variant | final score | task aggregate | MIA score | utility | gate | kept steps |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for variant in args.variants.split(","):
        rows, steps = [], []
        for seed in seeds:
            data, target, baseline = build_instance(args.work / "holdout" / f"seed-{seed}", seed, "small", lume, None)
            where = args.work / "stopping" / args.recipe / variant / f"seed-{seed}"
            evaluation = where / "eval"
            if not (evaluation / "evaluation_results.json").is_file():
                overrides = {"model": str(target), "data": str(data)}
                sets = VARIANTS[variant]
                recipe = load_recipe(find_recipe(args.recipe), overrides, lambda d, s=sets: apply_sets(d, s))
                model = run_recipe(recipe, where / "recipe", host=host, say=lambda _: None)
                report = json.loads((model / "unlearn_run.json").read_text(encoding="utf-8"))
                best = (report.get("monitor") or {}).get("best") or {}
                write_json(where / "kept.json", {"step": best.get("step")})  # before the evaluation marks it done
                lume.evaluate(model, data, evaluation, baseline=baseline, progress=False)
                shutil.rmtree(where / "recipe")  # the run folder run_recipe just made, evaluated
            rows.append(json.loads((evaluation / "evaluation_results.json").read_text(encoding="utf-8")))
            steps.append(str(json.loads((where / "kept.json").read_text())["step"] or "last"))
        cells = [mean_std([r[k] for r in rows]) for k in KEYS]
        gates = sum(bool((r.get("utility_gate") or {}).get("pass")) for r in rows)
        print(f"| {variant} | " + " | ".join(cells) + f" | {gates}/{len(rows)} | {', '.join(steps)} |", flush=True)


if __name__ == "__main__":
    main()
