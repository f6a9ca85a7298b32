"""``unlearn demo``, ``unlearn data synth`` and ``unlearn target build``: the embedded default
benchmark's commands, registered through the ``register_commands`` hook like any plugin's."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from unlearn import ConfigError, command_group, hookimpl
from unlearn.engine import apply_sets, describe_error

_out = Console()


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    data = command_group(cli, "data", "Benchmark data.")
    target = command_group(cli, "target", "The model to unlearn from.")
    cli.command()(demo)
    data.command("synth")(data_synth)
    target.command("build")(target_build)


def demo(
    out_dir: Path = typer.Option(
        Path("runs/demo"), "--out", "-o", help="Folder for data, target, runs and the report."
    ),
    method: str = typer.Option("gd", help="The loss method to demonstrate."),
    size: str = typer.Option("small", help="Benchmark size: tiny | small | medium."),
    seed: int = typer.Option(0),
    set_: list[str] = typer.Option([], "--set", "-s", help="Run setting, e.g. --set trainer.epochs=4"),
    oracle: bool = typer.Option(True, help="Also build (cached) and compare with the retrained oracle."),
    recipe: str = typer.Option(
        "tuned_rmu", help="A built-in recipe run beside the method (default: the best tuned one); 'none'."
    ),
) -> None:
    """The whole loop on the embedded default: benchmark, target and oracle (cached), evaluate,
    unlearn with a method and a recipe (--set applies to the method), evaluate against both."""
    from unlearn.bench.demo import run_demo

    overrides = apply_sets({}, set_)
    report = run_demo(
        out_dir,
        method=method,
        size=size,
        seed=seed,
        overrides=overrides,
        console=_out,
        oracle=oracle,
        recipe=None if recipe == "none" else recipe,
    )
    _out.print(f"[green]report written to[/green] {report}")


def data_synth(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder to write the benchmark to."),
    seed: int = typer.Option(0, help="Same seed, same benchmark."),
    size: str = typer.Option("small", help="tiny | small | medium"),
    benchmark: str = typer.Option("lume", help="lume | tofu | muse | any installed benchmark plugin."),
    overwrite: bool = typer.Option(False, help="Replace a benchmark written there before."),
) -> None:
    """Generate a benchmark's embedded default (LUME: stories, PII biographies, encyclopedic
    biographies; TOFU: fictitious authors; MUSE: passages, QA and holdout)."""
    from unlearn import check_output
    from unlearn.engine import get_host

    if size not in ("tiny", "small", "medium"):
        raise ConfigError(f"--size {size!r}: choose one of tiny, small, medium")
    check_output(out_dir, "benchmark", [], overwrite)  # a target may have been built from it
    counts = get_host().benchmark(benchmark).synthesize(out_dir, seed, size)
    table = Table(title=f"{benchmark} benchmark written to {out_dir}")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, str(n))
    _out.print(table)


def target_build(
    data: Path = typer.Option(..., "--data", "-d", help="Benchmark folder (ours or the public LUME splits)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Where to write the model folder."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Model/training setting, e.g. --set hidden_size=256"),
    overwrite: bool = typer.Option(False, help="Replace an existing model and discard an unfinished build."),
    device: str = typer.Option("auto", help="Where to train: auto | cpu | cuda | cuda:N."),
    oracle: bool = typer.Option(
        False,
        "--oracle",
        help="Build the model retrained without the forget set (same settings, seed and tokenizer): "
        "the reference of TOFU forget quality, MUSE PrivLeak and LUME's oracle column.",
    ),
) -> None:
    """Train a tiny OLMo model from scratch until it has memorised the benchmark (resumable)."""
    from pydantic import ValidationError

    from unlearn.bench.target import TargetSettings, build_target

    try:
        settings = TargetSettings.model_validate(apply_sets({}, set_))
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, prefix="--set")) from None
    build_target(data, out_dir, settings, overwrite=overwrite, device=device, oracle=oracle)
    _out.print(f"[green]target written to[/green] {out_dir}")
    _out.print(escape((out_dir / "README.md").read_text().split("## Memorisation", 1)[-1]))
