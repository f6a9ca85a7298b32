"""Recipes: one unlearning *system* as a file. A recipe is one or more training runs (a loss
method, its settings, parameter selection) and optional post-processing steps over their
outputs (e.g. a TIES merge), run end to end by ``unlearn recipe run FILE``.

Every step writes its own folder under the output folder, atomically. Running a recipe again
skips the steps that finished with the same settings (a crashed run resumes from its last
checkpoint) and redoes a post-processing step whose settings or inputs changed. A training run
whose settings changed (finished, or unfinished in its ``.NAME.partial`` folder) is refused
unless ``overwrite``, which redoes exactly the changed runs. ``recipe.json`` names the final model.

The file format, with an example, is in the README (Recipes); ``Recipe`` below validates it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from unlearn import Config, ConfigError, RunError, check_output, publish, write_json
from unlearn.engine import (
    CONFIG_FILE,
    REPORT_FILE,
    PluginHost,
    build_config,
    claim_device,
    describe_error,
    get_host,
    mark,
    read_config_file,
    run,
    run_identity,
)

RESULT_FILE = "recipe.json"
STEP_FILE = "unlearn_step.json"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class PostStep(Config):
    """A post-processing step: a registered post-process ``method`` applied to finished steps."""

    name: str = Field(pattern=_NAME, description="The step's folder under the output folder.")
    method: str = Field(description="A registered post-process method, e.g. merge.")
    inputs: list[str] = Field(min_length=1, description="Names of earlier runs/steps whose models it takes, in order.")
    config: dict[str, Any] = Field(default_factory=dict, description="The method's settings.")


class Recipe(Config):
    """One system: its runs, then its post-processing steps."""

    name: str = Field(pattern=_NAME)
    summary: str = ""
    reference: str = Field("", description="The paper or system description it reproduces.")
    notes: str = Field("", description="How the published settings were scaled, and why.")
    model: str | None = Field(None, description="Default input model (the command line's --model wins).")
    data: Path | None = None
    forget: Path | None = None
    retain: Path | None = None
    defaults: dict[str, Any] = Field(default_factory=dict, description="RunConfig fields shared by every run.")
    runs: list[dict[str, Any]] = Field(min_length=1, description="Training runs: RunConfig fields plus `name`.")
    post: list[PostStep] = Field(default_factory=list)

    @field_validator("runs")
    @classmethod
    def _runs_named(cls, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, item in enumerate(runs):
            name = item.get("name")
            if not isinstance(name, str) or not re.match(_NAME, name):
                raise ValueError(
                    f"runs[{i}].name: give each run a name of letters, digits, '_', '-' or '.' (got {name!r})"
                )
            for key in ("model", "data", "forget", "retain", "output_dir"):
                if key in item:
                    raise ValueError(f"runs[{i}] ({name}).{key}: set by the recipe, not per run")
        return runs

    @model_validator(mode="after")
    def _references(self) -> Recipe:
        seen: list[str] = []
        for name in [r["name"] for r in self.runs] + [p.name for p in self.post]:
            if name in seen or name == "recipe.json":
                raise ValueError(f"step name {name!r} is used twice")
            seen.append(name)
        done = [r["name"] for r in self.runs]
        for step in self.post:
            missing = [i for i in step.inputs if i not in done]
            if missing:
                raise ValueError(f"post {step.name!r}: inputs {missing} are not earlier steps ({done})")
            done.append(step.name)
        return self

    def step_names(self) -> list[str]:
        return [r["name"] for r in self.runs] + [p.name for p in self.post]

    def plugins(self) -> list[str]:
        """Every method the recipe uses."""
        names: list[str] = []
        for item in self.runs:
            merged = _deep_merge(self.defaults, item)
            for name in [merged.get("method"), *merged.get("with", [])]:
                if name and name not in names:
                    names.append(name)
        names += [p.method for p in self.post if p.method not in names]
        return names


@dataclass
class StepContext:
    """What ``post_process`` sees in a recipe step; satisfies ``PostContext``."""

    base_model: Path
    inputs: list[Path]
    work_dir: Path
    is_main_process: bool = True
    state: dict[str, Any] = field(default_factory=dict)


def builtin_recipes() -> dict[str, Path]:
    """The recipes shipped with unlearn (``unlearn/recipes/builtin/*.toml``), by name."""
    folder = Path(str(resources.files("unlearn.recipes") / "builtin"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file by path, or a built-in recipe by name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = builtin_recipes()
    if str(name_or_path) in builtin:
        return builtin[str(name_or_path)]
    raise ConfigError(
        f"{name_or_path}: no such recipe file, and no built-in recipe of that name ({', '.join(builtin)})"
    )


def load_recipe(
    path: Path, overrides: dict[str, Any] | None = None, edit: Callable[[dict[str, Any]], Any] | None = None
) -> Recipe:
    """Read and validate a recipe file. ``overrides`` (top-level fields, e.g. ``model``) replace
    the file's; ``edit`` may change the raw data first (the command line's ``--set``)."""
    data = read_config_file(path)
    if edit is not None:
        edit(data)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, source=str(path))) from None


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _fingerprint(folder: Path) -> str:
    """Identifies one finished result: the hash of its run report or step marker."""
    for name in (REPORT_FILE, STEP_FILE):
        if (folder / name).is_file():
            return hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16]
    raise RunError(f"{folder}: not a finished step (no {REPORT_FILE} or {STEP_FILE})")


def _record(name: str, kind: str, path: Path, started: float | None = None) -> dict[str, Any]:
    """A step's line in ``recipe.json``: skipped, or ran (with its wall time since ``started``)."""
    record = {"name": name, "kind": kind, "status": "skipped" if started is None else "ran", "path": str(path)}
    if started is not None:
        record["wall_time_s"] = round(time.time() - started, 2)
    return record


def run_recipe(
    recipe: Recipe,
    output_dir: Path,
    host: PluginHost | None = None,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
    device: str | None = None,
) -> Path:
    """Run every step not already done; returns the final model's folder. ``device`` (auto, cpu,
    cuda, cuda:N) overrides every run's ``trainer.device``; a finished run counts as done on any."""
    host = host or get_host()
    if device is not None:
        claim_device(device)  # a GPU this machine lacks fails before any work
    if recipe.model is None:
        raise ConfigError(f"recipe {recipe.name}: no model; give --model")
    if recipe.forget is None and recipe.data is None:
        raise ConfigError(f"recipe {recipe.name}: no data; give --data (or --forget/--retain)")
    for name in recipe.plugins():
        host.method(name)  # an unknown or broken plugin fails before any work
    inputs = [recipe.model, recipe.data, recipe.forget, recipe.retain]
    output_dir = check_output(output_dir, "recipe", inputs, overwrite=None)  # resumed, never replaced
    output_dir.mkdir(parents=True, exist_ok=True)
    mark(output_dir, "recipe")
    steps = [_run_step(recipe, i, output_dir, host, overwrite, say, device) for i in range(len(recipe.runs))]
    steps += [_post_step(recipe, step, output_dir, host, say) for step in recipe.post]
    final = output_dir / recipe.step_names()[-1]
    write_json(
        output_dir / RESULT_FILE,
        {"recipe": recipe.name, "final": recipe.step_names()[-1], "model": str(final), "steps": steps},
    )
    return final


def _run_step(
    recipe: Recipe,
    i: int,
    output_dir: Path,
    host: PluginHost,
    overwrite: bool,
    say: Callable[[str], None],
    device: str | None,
) -> dict[str, Any]:
    """The recipe's ``i``-th run, unless it finished before with the same settings; its record."""
    item = recipe.runs[i]
    name = item["name"]
    fields = {k: v for k, v in _deep_merge(recipe.defaults, item).items() if k != "name"}
    fields.update(model=recipe.model, output_dir=str(output_dir / name))
    if device is not None:
        fields["trainer"] = {**fields.get("trainer", {}), "device": device}
    for key in ("data", "forget", "retain"):
        if getattr(recipe, key) is not None:
            fields[key] = str(getattr(recipe, key))
    config = build_config(fields, source=f"recipe {recipe.name}, runs[{i}] ({name})")
    host.configure(config)
    done = output_dir / name / CONFIG_FILE
    started = time.time()
    if done.is_file() and run_identity(json.loads(done.read_text())) == run_identity(config.dump()):
        say(f"[{name}] done already, skipped")
        return _record(name, "run", output_dir / name)
    if done.is_file() and not overwrite:
        raise RunError(
            f"{output_dir / name} finished with other settings than recipe step {name!r}; "
            "pass --overwrite to redo the steps whose settings changed"
        )
    say(f"[{name}] training: {config.method}" + (f" with {', '.join(config.with_)}" if config.with_ else ""))
    run(config, host=host, overwrite=overwrite)
    return _record(name, "run", output_dir / name, started)


def _post_step(
    recipe: Recipe, step: PostStep, output_dir: Path, host: PluginHost, say: Callable[[str], None]
) -> dict[str, Any]:
    """One post-processing step over earlier steps' models, redone whenever its settings or inputs
    changed (it is cheap and derived); its record."""
    inputs = [output_dir / n for n in step.inputs]
    method = host.method(step.method, kinds=("post-process",))
    try:
        method_config = method.config.model_validate(step.config)
    except ValidationError as exc:
        raise ConfigError(
            describe_error(exc, prefix=f"post.{step.name}.config", source=f"recipe {recipe.name}")
        ) from None
    marker = {
        "method": step.method,
        "config": method_config.model_dump(mode="json"),
        "base_model": recipe.model,
        "inputs": {n: _fingerprint(p) for n, p in zip(step.inputs, inputs)},
    }
    target = output_dir / step.name
    if (target / STEP_FILE).is_file() and json.loads((target / STEP_FILE).read_text()) == marker:
        say(f"[{step.name}] done already, skipped")
        return _record(step.name, "post", target)
    say(f"[{step.name}] {step.method} over {', '.join(step.inputs)}")
    started = time.time()
    staging = output_dir / f".{step.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    ctx = StepContext(Path(recipe.model), inputs, staging)
    host.call("post_process", method, config=method_config, output_dir=staging, run=ctx)
    if not any(staging.glob("*.safetensors")):
        raise RunError(f"recipe step {step.name!r}: {step.method} left no safetensors weights")
    write_json(staging / STEP_FILE, marker)
    publish(staging, target, "model")
    return _record(step.name, "post", target, started)
