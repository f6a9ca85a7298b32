"""The ``unlearn`` command line."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import apply_override, build_config, parse_value, read_config_file
from .errors import ConfigError, NonFiniteLossError, RunError, UnlearnError
from .plugins import get_host

app = typer.Typer(help="Run, compose and vet LLM unlearning methods.", no_args_is_help=True, add_completion=False)
plugins_app = typer.Typer(help="List, check and create plugins.", invoke_without_command=True)
app.add_typer(plugins_app, name="plugins")
data_app = typer.Typer(help="Benchmark data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
target_app = typer.Typer(help="The model to unlearn from.", no_args_is_help=True)
app.add_typer(target_app, name="target")
recipe_app = typer.Typer(help="Run whole systems: several runs plus post-processing.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
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
}


def _apply_sets(data: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Apply ``--set KEY=VALUE`` items to ``data`` (dotted keys reach into tables)."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. trainer.learning_rate=1e-5")
        apply_override(data, key.strip(), parse_value(value.strip()))
    return data


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A TOML/YAML/JSON run config."),
    model: Optional[str] = typer.Option(None, help="Model folder to unlearn."),
    data: Optional[Path] = typer.Option(None, help="Folder with forget.jsonl and retain.jsonl."),
    forget: Optional[Path] = typer.Option(None, help="Forget rows (file or folder)."),
    retain: Optional[Path] = typer.Option(None, help="Retain rows (file or folder)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="The loss method, e.g. gd."),
    with_: list[str] = typer.Option([], "--with", "-w", help="Parameter-selection / post-processing entries."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder."),
    seed: Optional[int] = typer.Option(None),
    deepspeed: Optional[Path] = typer.Option(None, help="DeepSpeed JSON config, or a preset zero0..zero3."),
    lr: Optional[float] = typer.Option(None, help="trainer.learning_rate"),
    epochs: Optional[float] = typer.Option(None, help="trainer.epochs"),
    max_steps: Optional[int] = typer.Option(None, help="trainer.max_steps"),
    batch_size: Optional[int] = typer.Option(None, help="trainer.batch_size"),
    set_: list[str] = typer.Option([], "--set", "-s", help="Any field: --set config.gd.retain_weight=2"),
    overwrite: bool = typer.Option(False, help="Replace an existing output and discard an unfinished run."),
) -> None:
    """Unlearn a model with one loss method plus any --with plugins."""
    from .run import run as run_config

    data_: dict[str, Any] = read_config_file(config) if config else {}
    flags = locals()
    for flag, field in _FLAG_FIELDS.items():
        value = flags[flag]
        if value is not None:
            apply_override(data_, field, str(value) if isinstance(value, Path) else value)
    if with_:
        data_["with"] = list(with_)
    cfg = build_config(_apply_sets(data_, set_), source=str(config) if config else "")
    path = run_config(cfg, overwrite=overwrite)
    if os.environ.get("RANK", "0") == "0":
        out.print(f"[green]unlearned model written to[/green] {path}")


@plugins_app.callback()
def plugins(
    ctx: typer.Context,
    available: bool = typer.Option(False, "--available", "-a", help="Also list registered plugins that are not installed."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show installed plugins: name, version, entries, hooks, status."""
    if ctx.invoked_subcommand is not None:
        return
    from .registry import load_recipe_index, load_registry

    host = get_host()
    rows: list[dict[str, Any]] = []
    for info in host.plugins.values():
        rows.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "entries": info.entries,
                "kinds": sorted({host.entries[e].kind for e in info.entries}),
                "hooks": info.hooks,
                "status": info.status,
                "error": info.error,
                "installed": True,
            }
        )
    if available:
        installed = {r["name"] for r in rows} | set(host.entries)
        for name, reg in load_registry().items():
            if name not in installed:
                rows.append(
                    {
                        "name": name,
                        "distribution": reg.distribution,
                        "version": None,
                        "entries": [],
                        "kinds": [reg.kind],
                        "hooks": [],
                        "status": "not installed",
                        "error": None,
                        "installed": False,
                        "summary": reg.summary,
                    }
                )
        for name, recipe in load_recipe_index().items():
            missing = [p for p in recipe.plugins if p not in host.entries]
            rows.append(
                {
                    "name": name,
                    "distribution": None,
                    "version": None,
                    "entries": recipe.plugins,
                    "kinds": ["recipe"],
                    "hooks": [],
                    "status": "ok" if not missing else f"needs {', '.join(missing)}",
                    "error": None,
                    "installed": not missing,
                    "summary": recipe.summary,
                }
            )
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
            recipes.add_row(r["name"], ", ".join(r["entries"]), status, escape(r["summary"]))
            continue
        status = {"ok": "[green]ok[/green]", "not installed": "[dim]not installed[/dim]"}.get(
            r["status"], f"[red]error: {escape(r['error'] or '')}[/red]"
        )
        table.add_row(r["name"], r["version"] or "-", ",".join(r["kinds"]) or "-", ", ".join(r["hooks"]) or "-", status)
    out.print(table)
    if recipes.row_count:
        out.print(recipes)
    if not rows:
        out.print("No plugins installed. Try `unlearn plugins --available` and `unlearn install gd`.")


@plugins_app.command("check")
def plugins_check(name: str = typer.Argument(..., help="Plugin (entry-point) or entry name.")) -> None:
    """Run the conformance checks on an installed plugin (what organisers run before a competition)."""
    from .testing import check_plugin

    results = check_plugin(name)
    table = Table(title=f"conformance of {name}")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, "[green]pass[/green]" if r.ok else "[red]FAIL[/red]", escape(r.detail))
    out.print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@plugins_app.command("new")
def plugins_new(
    name: str = typer.Argument(..., help="Plugin name, e.g. myloss."),
    directory: Path = typer.Option(Path("."), "--dir", help="Where to create unlearn-plugin-NAME/."),
) -> None:
    """Write a ready-to-install method plugin package."""
    from .scaffold import create_plugin

    folder = create_plugin(name, directory)
    out.print(f"created {folder}; install it with `pip install -e {folder}` and run `pytest {folder}`")


@app.command()
def install(
    name: str = typer.Argument(..., help="A plugin listed by `unlearn plugins --available`."),
    editable: bool = typer.Option(False, "--editable", "-e", help="Editable install from the checkout."),
    pip_arg: list[str] = typer.Option([], "--pip-arg", help="Extra pip argument (repeatable)."),
) -> None:
    """pip-install a registered plugin into this environment (from plugins/ in a checkout)."""
    from .registry import install as do_install

    code = do_install(name, editable=editable, pip_args=pip_arg)
    raise typer.Exit(code)


@app.command()
def evaluate(
    model: Optional[Path] = typer.Argument(None, help="The model folder to evaluate."),
    data: Path = typer.Option(..., "--data", "-d", help="Folder with the forget and retain rows."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Where to write the evaluation."),
    split: str = typer.Option("train", help="Evaluate {forget,retain}_SPLIT.jsonl when the folder has them."),
    mia: Optional[Path] = typer.Option(None, help="Folder with mia_member.jsonl and mia_nonmember.jsonl (default: --data)."),
    utility: Optional[Path] = typer.Option(None, help="An MMLU folder (test/, dev/) or a utility.jsonl (default: DATA/utility.jsonl)."),
    baseline: Optional[Path] = typer.Option(None, help="The evaluation of the model before unlearning (gate, before/after)."),
    generations: Optional[Path] = typer.Option(None, help="Rescore the generations of an earlier evaluation; no model needed."),
    max_new_tokens: int = typer.Option(256),
    batch_size: int = typer.Option(32),
    mmlu_shots: int = typer.Option(5),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 (the organisers' choice) | float16"),
) -> None:
    """Score a model with the official SemEval-2025 Task 4 metrics, plus the MIA suite."""
    from .evaluator.evaluate import evaluate_model, rescore

    if (model is None) == (generations is None):
        raise ConfigError("give either a MODEL folder or --generations DIR")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"--dtype {dtype!r}: choose float32, bfloat16 or float16")
    if generations is not None:
        results = rescore(generations, data, out_dir, split=split, baseline=baseline)
    else:
        results = evaluate_model(model, data, out_dir, split=split, mia=mia, utility=utility, baseline=baseline,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size, mmlu_shots=mmlu_shots,
                                 dtype=dtype)
    out.print((out_dir / "summary.md").read_text(), markup=False, highlight=False)
    out.print(f"final score {results['aggregate-score']:.4f}; results in {out_dir}")


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for data, target, runs and the report."),
    method: str = typer.Option("gd", help="The loss method to demonstrate."),
    size: str = typer.Option("small", help="Benchmark size: tiny | small | medium."),
    seed: int = typer.Option(0),
    set_: list[str] = typer.Option([], "--set", "-s", help="Run setting, e.g. --set trainer.epochs=4"),
) -> None:
    """The whole loop on the embedded default: benchmark, target (cached), evaluate, unlearn, evaluate."""
    from .demo import run_demo

    report = run_demo(out_dir, method=method, size=size, seed=seed, overrides=_apply_sets({}, set_), console=out)
    out.print(f"[green]report written to[/green] {report}")


@app.command()
def compete(
    config: Path = typer.Option(..., "--config", "-c", help="The competition file (TOML/YAML/JSON)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Overrides output_dir."),
    time_limit: Optional[float] = typer.Option(None, help="Overrides time_limit_s (seconds per entrant)."),
    launcher: Optional[str] = typer.Option(None, help="Overrides launcher: python | torchrun | deepspeed."),
    nproc: Optional[int] = typer.Option(None, help="Overrides nproc."),
    entrant: list[str] = typer.Option([], "--entrant", "-e", help="Run only these entrants (repeatable)."),
    rerun: list[str] = typer.Option([], "--rerun", help="Redo these entrants even if cached (repeatable)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Any field: --set trainer.epochs=2"),
) -> None:
    """Organiser mode: run every entrant isolated and time-limited, evaluate, write a leaderboard."""
    from .compete import load_competition, run_competition

    flags = {"output_dir": str(output) if output else None, "time_limit_s": time_limit, "launcher": launcher, "nproc": nproc}
    comp = load_competition(config, flags, edit=lambda raw: _apply_sets(raw, set_))
    folder = run_competition(comp, only=entrant or None, rerun=rerun)
    out.print((folder / "leaderboard.md").read_text(), markup=False, highlight=False, soft_wrap=True)
    out.print(f"[green]leaderboard written to[/green] {folder}/leaderboard.{{md,csv,json,png}}", soft_wrap=True)


@recipe_app.command("run")
def recipe_run(
    recipe: str = typer.Argument(..., help="A recipe file, or the name of a built-in recipe (`unlearn recipe list`)."),
    model: Optional[str] = typer.Option(None, help="Model folder to unlearn (overrides the recipe's)."),
    data: Optional[Path] = typer.Option(None, help="Folder with the forget and retain rows."),
    forget: Optional[Path] = typer.Option(None, help="Forget rows (file or folder)."),
    retain: Optional[Path] = typer.Option(None, help="Retain rows (file or folder)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for every step's model and recipe.json."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Any recipe field: --set defaults.trainer.epochs=2"),
    overwrite: bool = typer.Option(False, help="Redo the runs whose settings changed (finished or not)."),
) -> None:
    """Run a recipe end to end; finished steps are skipped, so a crashed recipe resumes."""
    from .recipe import find_recipe, load_recipe, run_recipe

    path = find_recipe(recipe)
    paths = {"model": model, "data": data, "forget": forget, "retain": retain}
    loaded = load_recipe(path, {k: str(v) for k, v in paths.items() if v is not None},
                         edit=lambda raw: _apply_sets(raw, set_))
    final = run_recipe(loaded, output, overwrite=overwrite, say=lambda line: out.print(escape(line)))
    out.print(f"[green]recipe {loaded.name} finished; final model[/green] {final}")


@recipe_app.command("list")
def recipe_list() -> None:
    """The built-in recipes and the plugins each needs."""
    from .recipe import builtin_recipes, load_recipe

    host = get_host()
    table = Table(title="built-in recipes")
    for col in ("name", "plugins", "summary"):
        table.add_column(col)
    for name, path in builtin_recipes().items():
        recipe = load_recipe(path)
        needs = [p if p in host.entries else f"[red]{p} (not installed)[/red]" for p in recipe.plugins()]
        table.add_row(name, ", ".join(needs), escape(recipe.summary))
    out.print(table)


@recipe_app.command("show")
def recipe_show(recipe: str = typer.Argument(..., help="A recipe file or built-in name.")) -> None:
    """Print a recipe file."""
    from .recipe import find_recipe

    out.print(find_recipe(recipe).read_text(), markup=False, highlight=False)


@data_app.command("synth")
def data_synth(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder to write the benchmark to."),
    seed: int = typer.Option(0, help="Same seed, same benchmark."),
    size: str = typer.Option("small", help="tiny | small | medium"),
) -> None:
    """Generate a LUME-format benchmark (stories, PII biographies, encyclopedic biographies)."""
    from .synth import SIZES, generate

    if size not in SIZES:
        raise ConfigError(f"--size {size!r}: choose one of {', '.join(SIZES)}")
    counts = generate(out_dir, seed=seed, size=size)
    table = Table(title=f"benchmark written to {out_dir}")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, str(n))
    out.print(table)


@target_app.command("build")
def target_build(
    data: Path = typer.Option(..., "--data", "-d", help="Benchmark folder (ours or the public LUME splits)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Where to write the model folder."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Model/training setting, e.g. --set hidden_size=256"),
    overwrite: bool = typer.Option(False, help="Replace an existing model and discard an unfinished build."),
) -> None:
    """Train a tiny OLMo model from scratch until it has memorised the benchmark (resumable)."""
    from pydantic import ValidationError

    from .config import describe_error
    from .target import TargetSettings, build_target

    try:
        settings = TargetSettings.model_validate(_apply_sets({}, set_))
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, prefix="--set")) from None
    build_target(data, out_dir, settings, overwrite=overwrite)
    out.print(f"[green]target written to[/green] {out_dir}")
    out.print(escape((out_dir / "README.md").read_text().split("## Memorisation", 1)[-1]))


def main() -> None:
    """Entry point: user errors print one line (exit 2 for bad input, 1 for a failed run)."""
    try:
        app()
    except UnlearnError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1 if isinstance(exc, (RunError, NonFiniteLossError)) else 2)
    finally:
        # Everything is written by now; skip the collector's pass over torch's and transformers'
        # millions of objects at interpreter exit (about a second per command).
        gc.freeze()
