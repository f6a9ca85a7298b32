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
from collections.abc import Callable
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


def run_demo(
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

    from .synth import generate
    from .target import build_target

    console = console or Console()
    out = check_output(out, "demo", [], overwrite=None)  # a demo folder is resumed, its steps cached
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "demo")
    steps = _Steps(console)
    data, target, before = out / "data", out / "target", out / "eval_target"
    unlearned, after = out / f"unlearned_{method}", out / f"eval_{method}"
    steps("benchmark", (data / "utility.jsonl").is_file(), lambda: generate(data, seed=seed, size=size))
    steps("target model", (target / "target_card.json").is_file(), lambda: build_target(data, target, overwrite=True))
    steps("evaluate the target", (before / RESULTS).is_file(), lambda: evaluate_model(target, data, before))
    ideal = out / "eval_oracle" if oracle else None
    if ideal is not None:
        retrained = out / "oracle"
        steps(
            "oracle: the target retrained without the forget set",
            (retrained / "target_card.json").is_file(),
            lambda: build_target(data, retrained, overwrite=True, oracle=True),
        )
        steps("evaluate the oracle", (ideal / RESULTS).is_file(), lambda: evaluate_model(retrained, data, ideal))
    settings = _merge(DEMO_RUN.get(method, DEFAULT_RUN), overrides or {})
    run_fields = {"model": str(target), "data": str(data), "method": method, "output_dir": str(unlearned), "seed": seed}
    config = build_config(_merge(run_fields, settings))
    steps(f"unlearn with {method}", False, lambda: run(config, overwrite=True))
    evaluate = lambda model, folder: evaluate_model(model, data, folder, baseline=before, reference=ideal)  # noqa: E731
    steps(f"evaluate after {method}", False, lambda: evaluate(unlearned, after))
    columns = [("before", before), (method, after)]
    if recipe:
        columns.append((recipe, _recipe_steps(recipe, out, target, data, steps, evaluate)))
    if ideal is not None:
        columns.append(("oracle", ideal))
    _print_report(console, [(n, json.loads((folder / RESULTS).read_text())) for n, folder in columns])
    console.print("time per step (s): " + ", ".join(f"{k} {v}" for k, v in steps.timings.items()))
    staging = out / ".report.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("summary.md", "figure.png", RESULTS):
        shutil.copy2(after / name, staging / name)
    (staging / "timings.json").write_text(json.dumps(steps.timings, indent=2))
    publish(staging, out / "report", "report")
    return out / "report"


class _Steps:
    """The demo's steps: each printed, skipped when its output is cached, and timed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, done: bool, action: Callable[[], Any]) -> None:
        if done:
            self.console.print(f"[dim]- {name}: cached[/dim]")
            return
        self.console.print(f"[bold]- {name}[/bold]")
        started = time.time()
        action()
        self.timings[name] = round(time.time() - started, 1)


def _recipe_steps(
    recipe: str, out: Path, target: Path, data: Path, steps: _Steps, evaluate: Callable[[Path, Path], Any]
) -> Path:
    """Unlearn with the built-in ``recipe`` and evaluate its model; the evaluation's folder."""
    from unlearn.recipes import find_recipe, load_recipe, run_recipe

    folder, tuned = out / f"recipe_{recipe}", out / f"eval_{recipe}"
    loaded = load_recipe(find_recipe(recipe), {"model": str(target), "data": str(data)})
    final: list[Path] = []
    steps(
        f"unlearn with the recipe {recipe}", False, lambda: final.append(run_recipe(loaded, folder, say=lambda _: None))
    )
    steps(f"evaluate after {recipe}", False, lambda: evaluate(final[0], tuned))
    return tuned


def _print_report(console: Console, columns: list[tuple[str, dict[str, Any]]]) -> None:
    """The before / after / oracle table of LUME's numbers, and each unlearned model's gate."""
    names, results = [n for n, _ in columns], [r for _, r in columns]
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
