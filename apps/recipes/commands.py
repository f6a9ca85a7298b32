"""``unlearn recipe run|list|show``, registered through the ``register_commands`` hook like any
plugin's command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from unlearn import command_group, hookimpl
from unlearn.engine import apply_sets, get_host


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    out = Console()
    recipes = command_group(cli, "recipe", "Run whole systems: several runs plus post-processing.")

    @recipes.command("run")
    def recipe_run(
        recipe: str = typer.Argument(..., help="A recipe file, or a built-in recipe's name (`unlearn recipe list`)."),
        model: str | None = typer.Option(None, help="Model folder to unlearn (overrides the recipe's)."),
        data: Path | None = typer.Option(None, help="Folder with the forget and retain rows."),
        forget: Path | None = typer.Option(None, help="Forget rows (file or folder)."),
        retain: Path | None = typer.Option(None, help="Retain rows (file or folder)."),
        output: Path = typer.Option(..., "--output", "-o", help="Folder for every step's model and recipe.json."),
        set_: list[str] = typer.Option([], "--set", "-s", help="Any recipe field: --set defaults.trainer.epochs=2"),
        overwrite: bool = typer.Option(False, help="Redo the runs whose settings changed (finished or not)."),
        device: str | None = typer.Option(None, help="Every run's trainer.device: auto | cpu | cuda | cuda:N."),
    ) -> None:
        """Run a recipe end to end; finished steps are skipped, so a crashed recipe resumes."""
        from unlearn.recipes import find_recipe, load_recipe, run_recipe

        path = find_recipe(recipe)
        paths = {"model": model, "data": data, "forget": forget, "retain": retain}
        loaded = load_recipe(
            path, {k: str(v) for k, v in paths.items() if v is not None}, edit=lambda raw: apply_sets(raw, set_)
        )
        final = run_recipe(loaded, output, overwrite=overwrite, say=lambda line: out.print(escape(line)), device=device)
        out.print(f"[green]recipe {loaded.name} finished; final model[/green] {final}")

    @recipes.command("list")
    def recipe_list() -> None:
        """The built-in recipes and the plugins each needs."""
        from unlearn.recipes import builtin_recipes, load_recipe

        host = get_host()
        table = Table(title="built-in recipes")
        for col in ("name", "plugins", "summary"):
            table.add_column(col)
        for name, path in builtin_recipes().items():
            recipe = load_recipe(path)
            needs = [p if p in host.methods else f"[red]{p} (not installed)[/red]" for p in recipe.plugins()]
            table.add_row(name, ", ".join(needs), escape(recipe.summary))
        out.print(table)

    @recipes.command("show")
    def recipe_show(recipe: str = typer.Argument(..., help="A recipe file or built-in name.")) -> None:
        """Print a recipe file."""
        from unlearn.recipes import find_recipe

        out.print(find_recipe(recipe).read_text(), markup=False, highlight=False)
