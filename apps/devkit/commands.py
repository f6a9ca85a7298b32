"""``unlearn plugins check`` and ``unlearn plugins new``: the plugin author's commands."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from unlearn import command_group, hookimpl


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    plugins = command_group(cli, "plugins", "List, check and create plugins.")
    out = Console()

    @plugins.command("check")
    def plugins_check(name: str = typer.Argument(..., help="Plugin (entry-point) or method name.")) -> None:
        """Run the conformance checks on an installed plugin (what organisers run before a competition)."""
        from unlearn.devkit import check_plugin

        results = check_plugin(name)
        table = Table(title=f"conformance of {name}")
        for col in ("check", "result", "detail"):
            table.add_column(col)
        for r in results:
            table.add_row(r.name, "[green]pass[/green]" if r.ok else "[red]FAIL[/red]", escape(r.detail))
        out.print(table)
        if not all(r.ok for r in results):
            raise typer.Exit(1)

    @plugins.command("new")
    def plugins_new(
        name: str = typer.Argument(..., help="Plugin name, e.g. myloss."),
        directory: Path = typer.Option(Path("."), "--dir", help="Where to create unlearn-plugin-NAME/."),
        kind: str = typer.Option("method", help="method (a loss) | benchmark (data, evaluation, signals) | attack."),
    ) -> None:
        """Write a ready-to-install plugin package: a method, or a benchmark."""
        from unlearn.devkit.scaffold import create_plugin

        folder = create_plugin(name, directory, kind)
        out.print(f"created {folder}; install it with `pip install -e {folder}` and run `pytest {folder}`")
