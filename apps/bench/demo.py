"""``unlearn demo``: the whole loop on the embedded default, in minutes on a CPU.

Generate the benchmark, build the tiny target and the oracle (the same model retrained without
the forget set; all cached in the output folder), evaluate both, unlearn the target with one
method and with a built-in recipe (by default the best gate-passing setting `unlearn tune` found,
`benchmarks/tuned.py`), evaluate each against the target's evaluation and the oracle's, and print
and write a before/after/oracle report.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from unlearn import check_output, publish
from unlearn.engine import build_config, mark

# Settings that make gradient difference forget most of the small benchmark's forget set on the
# tiny target in about 20 s (measured, seed 0: final score 0.333 -> 0.749; utility 1.0 -> 0.5).
DEMO_RUN: dict[str, dict[str, Any]] = {
    "gd": {"trainer": {"epochs": 8, "learning_rate": 3e-4}, "config": {"gd": {"retain_weight": 2.0}}},
    "ga": {"trainer": {"epochs": 2, "learning_rate": 1e-4}},
}
DEFAULT_RUN: dict[str, Any] = {"trainer": {"epochs": 5, "learning_rate": 1e-4}}
# The built-in recipe shown beside the method: the best gate-passing setting found by tuning.
DEMO_RECIPE = "tuned_rmu"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def run_demo(  # noqa: C901, PLR0915 - still to split (issue 44)
    out: Path,
    method: str = "gd",
    size: str = "small",
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    console: Console | None = None,
    oracle: bool = True,
    recipe: str | None = DEMO_RECIPE,
) -> Path:
    """Run the demo into ``out``; returns the report folder (the method's evaluation)."""
    from unlearn.engine import run
    from unlearn.evaluator.evaluate import RESULTS, evaluate_model
    from unlearn.recipes import find_recipe, load_recipe, run_recipe

    from .synth import generate
    from .target import build_target

    console = console or Console()
    out = check_output(out, "demo", [], overwrite=None)  # a demo folder is resumed, its steps cached
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "demo")
    timings: dict[str, float] = {}
    data, target = out / "data", out / "target"
    before, unlearned, after, report = (
        out / "eval_target",
        out / f"unlearned_{method}",
        out / f"eval_{method}",
        out / "report",
    )

    def step(name: str, done: bool, action) -> None:
        if done:
            console.print(f"[dim]- {name}: cached[/dim]")
            return
        console.print(f"[bold]- {name}[/bold]")
        started = time.time()
        action()
        timings[name] = round(time.time() - started, 1)

    step("benchmark", (data / "utility.jsonl").is_file(), lambda: generate(data, seed=seed, size=size))
    step("target model", (target / "target_card.json").is_file(), lambda: build_target(data, target, overwrite=True))
    step("evaluate the target", (before / RESULTS).is_file(), lambda: evaluate_model(target, data, before))
    ideal = out / "eval_oracle" if oracle else None
    if ideal is not None:
        retrained = out / "oracle"
        step(
            "oracle: the target retrained without the forget set",
            (retrained / "target_card.json").is_file(),
            lambda: build_target(data, retrained, overwrite=True, oracle=True),
        )
        step("evaluate the oracle", (ideal / RESULTS).is_file(), lambda: evaluate_model(retrained, data, ideal))
    settings = _merge(DEMO_RUN.get(method, DEFAULT_RUN), overrides or {})
    config = build_config(
        _merge(
            {"model": str(target), "data": str(data), "method": method, "output_dir": str(unlearned), "seed": seed},
            settings,
        )
    )
    step(f"unlearn with {method}", False, lambda: run(config, overwrite=True))
    step(
        f"evaluate after {method}",
        False,
        lambda: evaluate_model(unlearned, data, after, baseline=before, reference=ideal),
    )
    columns = [("before", before), (method, after)]
    if recipe:
        steps, tuned = out / f"recipe_{recipe}", out / f"eval_{recipe}"
        loaded = load_recipe(find_recipe(recipe), {"model": str(target), "data": str(data)})
        final: list[Path] = []
        step(
            f"unlearn with the recipe {recipe}",
            False,
            lambda: final.append(run_recipe(loaded, steps, say=lambda _: None)),
        )
        step(
            f"evaluate after {recipe}",
            False,
            lambda: evaluate_model(final[0], data, tuned, baseline=before, reference=ideal),
        )
        columns.append((recipe, tuned))
    if ideal is not None:
        columns.append(("oracle", ideal))
    results = [json.loads((folder / RESULTS).read_text()) for _, folder in columns]
    names = [n for n, _ in columns]
    table = Table(title=f"on the tiny target: {' | '.join(names)}")
    for col in ("score", *names, "better when"):
        table.add_column(col)
    for task in sorted(k for k in results[1]["forget-set"] if not k.startswith("overall")):
        for split, better in (("forget-set", "lower"), ("retain-set", "higher")):
            for kind in ("regurgitation-score", "knowledge-score"):
                name = f"{task} {split.split('-')[0]} {kind.split('-')[0]}"
                table.add_row(name, *(f"{d[split][task][kind]:.3f}" for d in results), better)
    for name, key, better in (
        ("task aggregate", "harmonic-mean-task-aggregate", "higher"),
        ("MIA LOSS AUC", "mia_loss_acc", "0.5"),
        ("MIA score", "mia_final_score", "higher"),
        ("utility", "mmlu_average", "higher"),
        ("final score", "aggregate-score", "higher"),
    ):
        table.add_row(name, *(f"{d.get(key, float('nan')):.3f}" for d in results), better)
    console.print(table)
    for name, found in zip(names[1:], results[1:]):
        if name != "oracle":
            gate = found.get("utility_gate", {})
            console.print(f"{name}: utility gate (>= 75% of the target's): {'pass' if gate.get('pass') else 'FAIL'}")
    console.print("time per step (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))

    staging = out / ".report.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("summary.md", "figure.png", RESULTS):
        shutil.copy2(after / name, staging / name)
    (staging / "timings.json").write_text(json.dumps(timings, indent=2))
    publish(staging, report, "report")
    return report
