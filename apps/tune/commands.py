"""``unlearn tune``, registered through the ``register_commands`` hook like any plugin's command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from unlearn import ConfigError, hookimpl
from unlearn.engine import apply_override, apply_sets, describe_error, parse_value, read_config_file

_out = Console()
# The options that are TuneSettings fields of the same name.
_SETTINGS = ("trials", "jobs", "storage", "study", "objective", "report_epochs", "prune", "startup_trials", "seed")
_SETTINGS += ("keep_models",)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    cli.command()(tune)


def tune(
    output: Path = typer.Option(..., "--output", "-o", help="The study's folder (resumed when it exists)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="A run config every trial starts from."),
    model: str | None = typer.Option(None, help="Model folder to unlearn."),
    data: Path | None = typer.Option(None, help="Benchmark folder (the tuning instance)."),
    method: str | None = typer.Option(None, "--method", "-m", help="The loss method to tune."),
    with_: list[str] = typer.Option([], "--with", "-w", help="Parameter-selection / post-processing methods."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Any base run field: --set trainer.batch_size=4"),
    space: list[str] = typer.Option(
        [], help="PATH={low=.., high=..[, log=true][, step=..]}, PATH=[choices], or PATH=false (not searched)."
    ),
    trials: int = typer.Option(20, help="Finished trials (completed or pruned) to aim at."),
    jobs: int = typer.Option(1, help="Trials at once, each on its own cores with that many torch threads."),
    storage: str | None = typer.Option(None, help="RDB URL to share the study (default: sqlite OUT/study.db)."),
    study: str = typer.Option("unlearn", help="The study's name in the storage."),
    objective: str | None = typer.Option(
        None, help="Expression of the last step's signals to optimise (default: the benchmark's, LUME's score)."
    ),
    minimize: bool = typer.Option(False, help="Minimise the objective instead."),
    constraint: list[str] = typer.Option(
        [],
        help="Must hold for a feasible trial (default: the benchmark's utility gate; LUME's "
        "utility >= 0.75 * initial_utility).",
    ),
    report_epochs: float = typer.Option(2.0, help="Generation-based signals and a pruning report every N epochs."),
    prune: bool = typer.Option(True, help="Median pruning on the intermediate values."),
    startup_trials: int = typer.Option(5, help="Random trials before TPE and the pruner act."),
    seed: int = typer.Option(0, help="Sampler seed."),
    holdout_seeds: str = typer.Option("", help="Re-run the best and the base settings on these fresh seeds: 1,2,3."),
    instance: list[str] = typer.Option(
        [], help="MODEL_DIR,DATA_DIR: one more tuning instance; every trial runs on each (mean objective)."
    ),
    instance_seeds: str = typer.Option(
        "", help="More tuning instances of the embedded benchmark (built like the held-out ones): 10,11."
    ),
    holdout_size: str = typer.Option(
        "small", help="Size of the held-out and --instance-seeds instances: tiny | small | medium."
    ),
    holdout_dir: Path | None = typer.Option(
        None, help="Instances (held-out and --instance-seeds), shared by studies (default OUT/holdout)."
    ),
    target_set: list[str] = typer.Option([], help="Target setting of the held-out targets, e.g. hidden_size=96."),
    keep_models: bool = typer.Option(False, help="Keep every trial's model."),
    overwrite: bool = typer.Option(False, help="Discard the study in OUTPUT and start again."),
    progress: bool = typer.Option(True, help="Show the progress bar."),
) -> None:
    """Search a method's settings with Optuna (TPE, median pruning, a resumable RDB study)."""
    from unlearn.tune import TuneSettings

    chosen = {k: v for k, v in locals().items() if k in _SETTINGS}
    base = _base(config, {"model": model, "data": data, "method": method}, with_, set_)
    given = _space(space)
    seeds, tuning_seeds = _seeds(holdout_seeds), _seeds(instance_seeds)
    if set(seeds) & set(tuning_seeds):
        raise ConfigError(f"seeds {sorted(set(seeds) & set(tuning_seeds))} are both tuning and held-out instances")
    instances = _instances(instance, tuning_seeds, holdout_dir, holdout_size, target_set, base)
    try:
        settings = TuneSettings(
            base=base,
            direction="minimize" if minimize else None if objective is None else "maximize",
            space=given,
            instances=instances,
            **chosen,
            **({"constraints": constraint} if constraint else {}),
        )
    except ValidationError as exc:  # one line naming the option, not a traceback
        raise ConfigError(describe_error(exc, source="unlearn tune")) from None
    _search(settings, output, overwrite, progress, (seeds, holdout_size, holdout_dir, target_set))


def _base(config: Path | None, fields: dict[str, Any], with_: list[str], set_: list[str]) -> dict[str, Any]:
    """The run config every trial starts from: the file, the flags, ``--set``; no output folder."""
    base: dict[str, Any] = read_config_file(config) if config else {}
    for field, value in fields.items():
        if value is not None:
            apply_override(base, field, str(value) if isinstance(value, Path) else value)
    if with_:
        base["with"] = list(with_)
    apply_sets(base, set_)
    base.pop("output_dir", None)
    return base


def _seeds(text: str) -> list[int]:
    return [int(s) for s in text.replace(" ", "").split(",") if s]


def _space(items: list[str]) -> dict[str, Any]:
    """``--space PATH=RANGE`` options as a mapping of paths to ranges."""
    given = {}
    for item in items:
        path, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--space {item!r}: expected PATH=RANGE, e.g. config.npo.beta={{low=0.01, high=1}}")
        given[path.strip()] = parse_value(value.strip(), flag=f"--space {path.strip()}")
    return given


def _instances(
    items: list[str],
    tuning_seeds: list[int],
    holdout_dir: Path | None,
    size: str,
    target_set: list[str],
    base: dict[str, Any],
) -> list[dict[str, str]]:
    """The tuning instances beyond the base run's: ``--instance`` pairs, then the embedded
    benchmark's instance of each ``--instance-seeds`` seed (built once, shared with held-out)."""
    instances = []
    for item in items:
        model_dir, sep, data_dir = item.rpartition(",")
        if not sep or not model_dir or not data_dir:
            raise ConfigError(f"--instance {item!r}: expected MODEL_DIR,DATA_DIR")
        instances.append({"model": model_dir, "data": data_dir})
    if not tuning_seeds:
        return instances
    if holdout_dir is None:
        raise ConfigError("--instance-seeds: give --holdout-dir, the folder of instances (outside the study's)")
    from unlearn.engine import TrainerSettings, get_host
    from unlearn.tune.study import build_instance

    default = TrainerSettings.model_fields["eval_benchmark"].default
    benchmark = get_host().benchmark(base.get("trainer", {}).get("eval_benchmark", default))
    for s in tuning_seeds:
        found, target_dir, _ = build_instance(holdout_dir / f"seed-{s}", s, size, benchmark, target_set, _out.print)
        instances.append({"model": str(target_dir), "data": str(found)})
    return instances


def _search(settings: Any, output: Path, overwrite: bool, progress: bool, held_out: tuple) -> None:
    """Run the study, re-run the best and the base settings on the held-out seeds, write and print
    the outcome."""
    from unlearn.tune import prepare, run_workers, write_outputs
    from unlearn.tune.study import best_trial, holdout

    seeds, size, holdout_dir, target_set = held_out
    prepared = prepare(settings, output, overwrite=overwrite)
    _out.print(f"study {settings.study!r} in {escape(prepared.url)}; space:")
    for path, dim in prepared.space.items():
        _out.print(f"  {escape(path)}: {escape(dim.describe())}")
    run_workers(prepared, progress=progress)
    optuna_study = prepared.load()
    best = best_trial(optuna_study)
    held = None
    if seeds and best is not None:
        say = lambda s: _out.print(escape(s))  # noqa: E731
        held = holdout(prepared, best.params, seeds, size, holdout_dir, target_set, say=say)
    summary = write_outputs(prepared, optuna_study, held)
    if summary["best"] is None:
        _out.print("[red]no trial was both complete and feasible[/red]; see report.md")
    else:
        b = summary["best"]
        params = escape(str(b["params"]))
        _out.print(f"[green]best trial #{b['number']}: {prepared.goal} = {b['value']:.4f}[/green] {params}")
    _out.print(f"report: {prepared.out / 'report.md'}; best settings: {prepared.out / 'best.toml'}")
