"""The ``unlearn`` command line: ``run``, ``plugins`` and ``install`` here; every other command
(``recipe``, ``evaluate``, ``demo``, ``data``, ``target``, ``compete``, ``plugins check|new``) comes
from a plugin's ``register_commands`` hook, the built-in applications' included."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from unlearn import RunError
from unlearn.cli import cache
from unlearn.engine import (
    NonFiniteLossError,
    UnlearnError,
    apply_override,
    apply_sets,
    build_config,
    get_host,
    host_loaded,
    read_config_file,
)

app = typer.Typer(help="Run, compose and vet LLM unlearning methods.", no_args_is_help=True, add_completion=False)
plugins_app = typer.Typer(help="List, check and create plugins.", invoke_without_command=True)
app.add_typer(plugins_app, name="plugins")
out = Console()
err = Console(stderr=True)

# Flags that map onto one config field each; everything else goes through --set.
_FLAG_FIELDS = {
    "model": "model",
    "data": "data",
    "forget": "forget",
    "retain": "retain",
    "method": "method",
    "output": "output_dir",
    "seed": "seed",
    "deepspeed": "deepspeed",
    "lr": "trainer.learning_rate",
    "epochs": "trainer.epochs",
    "max_steps": "trainer.max_steps",
    "batch_size": "trainer.batch_size",
    "device": "trainer.device",
}


@app.command()
def run(
    config: Path | None = typer.Option(None, "--config", "-c", help="A TOML/YAML/JSON run config."),
    model: str | None = typer.Option(None, help="Model folder to unlearn."),
    data: Path | None = typer.Option(None, help="Folder with forget.jsonl and retain.jsonl."),
    forget: Path | None = typer.Option(None, help="Forget rows (file or folder)."),
    retain: Path | None = typer.Option(None, help="Retain rows (file or folder)."),
    method: str | None = typer.Option(None, "--method", "-m", help="The loss method, e.g. gd."),
    with_: list[str] = typer.Option([], "--with", "-w", help="Parameter-selection / post-processing methods."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output folder."),
    seed: int | None = typer.Option(None),
    deepspeed: Path | None = typer.Option(None, help="DeepSpeed JSON config, or a preset zero0..zero3."),
    lr: float | None = typer.Option(None, help="trainer.learning_rate"),
    epochs: float | None = typer.Option(None, help="trainer.epochs"),
    max_steps: int | None = typer.Option(None, help="trainer.max_steps"),
    batch_size: int | None = typer.Option(None, help="trainer.batch_size"),
    device: str | None = typer.Option(None, help="trainer.device: auto | cpu | cuda | cuda:N"),
    set_: list[str] = typer.Option([], "--set", "-s", help="Any field: --set config.gd.retain_weight=2"),
    overwrite: bool = typer.Option(False, help="Replace an existing output and discard an unfinished run."),
) -> None:
    """Unlearn a model with one loss method plus any --with plugins."""
    from unlearn.engine import run as run_config

    data_: dict[str, Any] = read_config_file(config) if config else {}
    flags = locals()
    for flag, field in _FLAG_FIELDS.items():
        value = flags[flag]
        if value is not None:
            apply_override(data_, field, str(value) if isinstance(value, Path) else value)
    if with_:
        data_["with"] = list(with_)
    cfg = build_config(apply_sets(data_, set_), source=str(config) if config else "")
    path = run_config(cfg, overwrite=overwrite)
    if os.environ.get("RANK", "0") == "0":
        out.print(f"[green]unlearned model written to[/green] {path}")


def plugin_rows(available: bool = False, builtin: bool = False) -> list[dict[str, Any]]:
    """What ``unlearn plugins`` shows, as data: installed plugins (the built-in applications too
    with ``builtin``), and with ``available`` the registry's plugins that are not installed and
    the recipes with the methods each needs."""
    from unlearn.cli.registry import load_recipe_index, load_registry

    listing = _CACHED or _listing()
    blank = {
        "distribution": None,
        "version": None,
        "methods": [],
        "benchmarks": [],
        "attacks": [],
        "kinds": [],
        "hooks": [],
        "error": None,
    }
    rows = [r for r in listing["plugins"] if builtin or not r["builtin"]]
    if not available:
        return rows
    installed = {r["name"] for r in listing["plugins"]} | set(listing["methods"])
    for name, known in load_registry().items():
        if name not in installed:
            rows.append(
                {
                    **blank,
                    "name": name,
                    "distribution": known.distribution,
                    "kinds": [known.kind],
                    "status": "not installed",
                    "installed": False,
                    "builtin": False,
                    "summary": known.summary,
                }
            )
    for name, recipe in load_recipe_index().items():
        missing = [p for p in recipe.plugins if p not in listing["methods"]]
        rows.append(
            {
                **blank,
                "name": name,
                "methods": recipe.plugins,
                "kinds": ["recipe"],
                "status": "ok" if not missing else f"needs {', '.join(missing)}",
                "installed": not missing,
                "builtin": False,
                "summary": recipe.summary,
            }
        )
    return rows


def _listing() -> dict[str, Any]:
    """Every loaded plugin (the built-in applications too) as ``unlearn plugins`` shows it, and the
    names of all registered methods: what the plugin cache keeps."""
    host = get_host()
    rows: list[dict[str, Any]] = []
    for info in host.plugins.values():
        kinds = sorted({host.methods[m].kind for m in info.methods}) + (["benchmark"] if info.benchmarks else [])
        kinds += ["attack"] if info.attacks else []
        kinds = kinds or (["commands"] if "register_commands" in info.hooks else [])
        rows.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "methods": info.methods,
                "benchmarks": info.benchmarks,
                "attacks": info.attacks,
                "kinds": kinds,
                "hooks": info.hooks,
                "status": info.status,
                "error": info.error,
                "installed": True,
                "builtin": info.builtin,
            }
        )
    return {"plugins": rows, "methods": sorted(host.methods)}


def _commands() -> list[dict[str, Any]]:
    """The top-level commands as ``unlearn --help`` lists them, in its order: what the cache keeps."""
    group = typer.main.get_command(app)
    return [
        {
            "name": name,
            "help": cmd.help,
            "short_help": cmd.short_help,
            "hidden": cmd.hidden,
            "deprecated": cmd.deprecated,
            "panel": cmd.rich_help_panel if isinstance(getattr(cmd, "rich_help_panel", None), str) else None,
            "group": hasattr(cmd, "commands"),
        }
        for name, cmd in group.commands.items()
    ]


def _help_from(record: dict[str, Any]) -> None:
    """``unlearn --help`` from the cache: the commands' names and help, no plugin imported. Each
    plugin command is a stand-in that only describes itself; none runs (any other argument list
    loads the plugins)."""
    from typer.core import TyperCommand, TyperGroup

    group = typer.main.get_command(app)
    own = dict(group.commands)  # type: ignore[attr-defined]
    group.commands = {}  # type: ignore[attr-defined]
    for c in record["commands"]:
        stand_in = TyperGroup if c["group"] else TyperCommand
        group.commands[c["name"]] = own.get(c["name"]) or stand_in(  # type: ignore[attr-defined]
            name=c["name"],
            help=c["help"],
            short_help=c["short_help"],
            hidden=c["hidden"],
            deprecated=c["deprecated"],
            rich_help_panel=c["panel"],
        )
    group()


# Set by main() when the plugin cache answers `unlearn plugins`; None when the plugins are loaded.
_CACHED: dict[str, Any] | None = None
_PLUGINS_FLAGS = {"--all", "--json", "--available", "-a"}


@plugins_app.callback()
def plugins(
    ctx: typer.Context,
    available: bool = typer.Option(
        False, "--available", "-a", help="Also list registered plugins that are not installed."
    ),
    all_: bool = typer.Option(False, "--all", help="Also list the built-in applications (evaluator, compete, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show installed plugins: name, version, kind, hooks, status."""
    if ctx.invoked_subcommand is not None:
        return
    rows = plugin_rows(available, builtin=all_)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="unlearn plugins")
    for col in ("name", "version", "kind", "hooks", "status"):
        table.add_column(col)
    recipes = Table(title="recipes (unlearn recipe run NAME)")
    for col in ("name", "uses", "status", "summary"):
        recipes.add_column(col)
    for r in rows:
        if r["kinds"] == ["recipe"]:
            status = "[green]ok[/green]" if r["installed"] else f"[dim]{escape(r['status'])}[/dim]"
            recipes.add_row(r["name"], ", ".join(r["methods"]), status, escape(r["summary"]))
            continue
        status = {"ok": "[green]ok[/green]", "not installed": "[dim]not installed[/dim]"}.get(
            r["status"], "[red]error (below)[/red]"
        )
        table.add_row(r["name"], r["version"] or "-", ",".join(r["kinds"]) or "-", ", ".join(r["hooks"]) or "-", status)
    out.print(table)
    for r in rows:  # in full, one line each: a table cell would wrap the message
        if r.get("error"):
            out.print(f"[red]{escape(r['name'])}: {escape(r['error'])}[/red]", soft_wrap=True)
    if recipes.row_count:
        out.print(recipes)
    if not rows:
        out.print("No plugins installed. Try `unlearn plugins --available` and `unlearn install gd`.")


@app.command()
def install(
    name: str = typer.Argument(..., help="A plugin listed by `unlearn plugins --available`."),
    editable: bool = typer.Option(False, "--editable", "-e", help="Editable install from the checkout."),
    pip_arg: list[str] = typer.Option([], "--pip-arg", help="Extra pip argument (repeatable)."),
) -> None:
    """pip-install a registered plugin into this environment (from plugins/ in a checkout)."""
    from unlearn.cli.registry import install as do_install

    code = do_install(name, editable=editable, pip_args=pip_arg)
    raise typer.Exit(code)


class _QuietCpuFallback(logging.Filter):
    """DeepSpeed announces on every import that it found no GPU; on a CPU machine that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Setting accelerator to CPU")


def _interrupted(signum: int, frame: Any) -> None:
    err.print(
        "interrupted: finished outputs are kept and nothing half-written was published; run the same command "
        "again to resume (runs and recipes continue from their last checkpoint)",
        highlight=False,
        soft_wrap=True,
    )
    raise KeyboardInterrupt  # the CLI exits with 130


def main() -> None:
    """Entry point: user errors print one line (exit 2 for bad input, 1 for a failed run, 130 on Ctrl-C)."""
    signal.signal(signal.SIGINT, _interrupted)
    logging.getLogger("DeepSpeed").addFilter(_QuietCpuFallback())  # the logger DeepSpeed creates on import
    # peft still calls a transformers property that transformers 5 deprecated; nothing a user can change.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    global _CACHED
    args = sys.argv[1:]
    try:
        listing = args in ([], ["--help"]) or (args[:1] == ["plugins"] and set(args[1:]) <= _PLUGINS_FLAGS)
        if listing and not host_loaded():
            _CACHED = cache.load()  # answer without importing any plugin
        if _CACHED is not None and args[:1] != ["plugins"]:
            _help_from(_CACHED)
            return
        if _CACHED is None:
            get_host().add_commands(app)
            cache.refresh(lambda: {**_listing(), "commands": _commands()})
        app()
    except UnlearnError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1 if isinstance(exc, (RunError, NonFiniteLossError)) else 2)
    finally:
        # Everything is written by now; skip the collector's pass over torch's and transformers'
        # millions of objects at interpreter exit (about a second per command).
        gc.freeze()
