"""``unlearn attack``, registered through the ``register_commands`` hook like any plugin's command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from unlearn import hookimpl

_out = Console()


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    cli.command()(attack)


def attack(
    model: Path = typer.Argument(..., help="The unlearned model folder (only read)."),
    data: Path = typer.Option(..., "--data", "-d", help="The benchmark's data folder."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Where to write the results (resumed when it exists)."),
    target: Path = typer.Option(..., "--target", "-t", help="The model before unlearning: recovery's 1."),
    benchmark: str = typer.Option("lume", help="lume | tofu | muse | any installed benchmark plugin."),
    attacks: str = typer.Option("", help="Comma-separated attacks (default: every installed one)."),
    reference: Path | None = typer.Option(
        None, help="The model retrained without the forget set (the oracle): attacked too, as the floor."
    ),
    set_: list[str] = typer.Option([], "--set", "-s", help="An attack's setting, e.g. --set quantize.bits=[4]"),
    seed: int = typer.Option(0, help="Every random choice of the attacks derives from it."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    keep_models: bool = typer.Option(False, help="Keep the attacked models (in OUT/work)."),
) -> None:
    """Run the installed attack plugins (e.g. quantize) on an unlearned model and measure, with the
    benchmark's own scoring, how much of the forgotten knowledge each brings back."""
    from unlearn.engine import apply_sets
    from unlearn.robustness import run_attacks

    chosen = [a.strip() for a in attacks.split(",") if a.strip()] or None
    results = run_attacks(
        model,
        data,
        out_dir,
        target,
        benchmark=benchmark,
        attacks=chosen,
        settings=apply_sets({}, set_),
        reference=reference,
        seed=seed,
        device=device,
        keep_models=keep_models,
        say=lambda line: _out.print(escape(line)),
    )
    for name, found in results["unlearned"].items():
        shown = found.get("skipped") or found.get("failed") or f"recovery {found['recovery']}"
        _out.print(f"{name}: {escape(str(shown))}")
    _out.print(f"worst recovery {results['robust']['recovery']}; report in {out_dir / 'report.md'}")
