"""``unlearn compete``: organiser mode's command, registered through the ``register_commands`` hook
like any plugin's."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from unlearn import hookimpl
from unlearn.engine import apply_sets


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    out = Console()

    @cli.command()
    def compete(
        config: Path = typer.Option(..., "--config", "-c", help="The competition file (TOML/YAML/JSON)."),
        output: Path | None = typer.Option(None, "--output", "-o", help="Overrides output_dir."),
        time_limit: float | None = typer.Option(None, help="Overrides time_limit_s (seconds per entrant)."),
        launcher: str | None = typer.Option(None, help="Overrides launcher: python | torchrun | deepspeed."),
        nproc: int | None = typer.Option(None, help="Overrides nproc."),
        entrant: list[str] = typer.Option([], "--entrant", "-e", help="Run only these entrants (repeatable)."),
        rerun: list[str] = typer.Option([], "--rerun", help="Redo these entrants even if cached (repeatable)."),
        set_: list[str] = typer.Option([], "--set", "-s", help="Any field: --set trainer.epochs=2"),
    ) -> None:
        """Organiser mode: run every entrant isolated and time-limited, evaluate, write a leaderboard."""
        from unlearn.compete.competition import run_competition
        from unlearn.compete.config import load_competition

        flags = {
            "output_dir": str(output) if output else None,
            "time_limit_s": time_limit,
            "launcher": launcher,
            "nproc": nproc,
        }
        comp = load_competition(config, flags, edit=lambda raw: apply_sets(raw, set_))
        folder = run_competition(comp, only=entrant or None, rerun=rerun)
        out.print((folder / "leaderboard.md").read_text(), markup=False, highlight=False, soft_wrap=True)
        out.print(f"[green]leaderboard written to[/green] {folder}/leaderboard.{{md,csv,json,png}}", soft_wrap=True)
