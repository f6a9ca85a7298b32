"""Recipes: validation with clear errors, the built-in recipes are valid and indexed, and a
two-run recipe with a merge resumes after its first run is done (a crash in the second)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import REPO, cli
from pydantic import BaseModel, ConfigDict

from unlearn import ConfigError, LossContext, RunError, hookimpl
from unlearn.cli.registry import load_recipe_index
from unlearn.engine import NonFiniteLossError, PluginHost
from unlearn.recipes import RESULT_FILE, Recipe, builtin_recipes, load_recipe, run_recipe


class _NoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Explodes:
    """A loss method that crashes its run with a NaN loss."""

    @hookimpl
    def register_methods(self, register: Callable[..., None]) -> None:
        register("explodes", config=_NoConfig, kind="loss", uses_retain=False)

    @hookimpl
    def compute_loss(self, method: str, config: BaseModel, ctx: LossContext) -> torch.Tensor:
        return ctx.nll("forget") * float("nan")


def _recipe(tiny_model: Path, tiny_data: Path, second: str = "explodes", lr: float = 1e-3) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "two",
            "model": str(tiny_model),
            "data": str(tiny_data),
            "defaults": {
                "seed": 1,
                "trainer": {"max_steps": 2, "batch_size": 2, "learning_rate": lr, "progress": False},
            },
            "runs": [{"name": "first", "method": "gd"}, {"name": "second", "method": second}],
            "post": [
                {
                    "name": "merged",
                    "method": "merge",
                    "inputs": ["first", "second"],
                    "config": {"merge_method": "task_arithmetic", "weights": [0.5, 0.5]},
                }
            ],
        }
    )


def test_two_run_recipe_resumes_after_its_first_run(tiny_model, tiny_data, tmp_path):
    host = PluginHost()
    host.register(_Explodes(), "explodes")
    out = tmp_path / "recipe"
    lines: list[str] = []
    with pytest.raises(NonFiniteLossError):
        run_recipe(_recipe(tiny_model, tiny_data), out, host=host, say=lines.append)
    first_report = (out / "first" / "unlearn_run.json").read_bytes()
    assert not (out / "second").exists() and not (out / "merged").exists()

    lines.clear()
    with pytest.raises(RunError, match="second.partial holds an unfinished run with a different config"):
        run_recipe(_recipe(tiny_model, tiny_data, second="ga"), out, host=host, say=lines.append)
    lines.clear()
    final = run_recipe(_recipe(tiny_model, tiny_data, second="ga"), out, host=host, overwrite=True, say=lines.append)
    assert lines[0] == "[first] done already, skipped"
    assert (out / "first" / "unlearn_run.json").read_bytes() == first_report  # not redone
    assert final == out / "merged" and (final / "model.safetensors").is_file()
    result = json.loads((out / RESULT_FILE).read_text())
    assert [(s["name"], s["status"]) for s in result["steps"]] == [
        ("first", "skipped"),
        ("second", "ran"),
        ("merged", "ran"),
    ]
    assert result["model"] == str(final)

    lines.clear()
    run_recipe(_recipe(tiny_model, tiny_data, second="ga"), out, host=host, say=lines.append)
    assert all(line.endswith("done already, skipped") for line in lines) and len(lines) == 3

    with pytest.raises(RunError, match="finished with other settings than recipe step 'first'"):
        run_recipe(_recipe(tiny_model, tiny_data, second="ga", lr=2e-3), out, host=host, say=lines.append)
    lines.clear()
    run_recipe(_recipe(tiny_model, tiny_data, second="ga", lr=2e-3), out, host=host, overwrite=True, say=lines.append)
    assert not any("skipped" in line for line in lines) and len(lines) == 3


@pytest.mark.parametrize(
    "change, message",
    [
        ({"post": [{"name": "m", "method": "merge", "inputs": ["nope"]}]}, "inputs \\['nope'\\] are not earlier steps"),
        ({"runs": [{"name": "a", "method": "gd"}, {"name": "a", "method": "ga"}]}, "step name 'a' is used twice"),
        ({"runs": [{"name": "a", "method": "gd", "model": "x"}]}, "runs\\[0\\] \\(a\\).model: set by the recipe"),
        ({"runs": [{"method": "gd"}]}, "runs\\[0\\].name"),
    ],
)
def test_bad_recipes_are_named(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "bad", "runs": [{"name": "a", "method": "gd"}], **change}))
    with pytest.raises(ConfigError, match=message) as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_a_bad_run_setting_names_the_step(tiny_model, tiny_data, tmp_path):
    recipe = _recipe(tiny_model, tiny_data, second="ga")
    recipe.runs[1]["trainer"] = {"learning_rate": -1}
    with pytest.raises(ConfigError, match=r"runs\[1\] \(second\).*trainer.learning_rate"):
        run_recipe(recipe, tmp_path / "o", host=PluginHost())


def test_builtin_recipes_validate_and_are_indexed():
    recipes = builtin_recipes()
    index = load_recipe_index(REPO / "registry.toml")
    shipped = {"ailsntua", "zjuklab", "ynu", "mr_snuffleupagus", "sha256", "tuned_gd_layers", "tuned_rmu"}
    assert set(recipes) == set(index) == shipped
    plugins = tomllib.loads((REPO / "registry.toml").read_text())["plugins"]
    for name, path in recipes.items():
        recipe = load_recipe(path)
        assert recipe.name == name and (REPO / index[name].path).resolve() == path.resolve()
        assert recipe.plugins() == index[name].plugins or set(recipe.plugins()) == set(index[name].plugins)
        assert set(recipe.plugins()) <= set(plugins), name
        assert recipe.summary and recipe.reference and recipe.notes


@pytest.mark.heavy
def test_cli_runs_a_recipe_and_lists_recipes(tiny_model, tiny_data, tmp_path):
    recipe = tmp_path / "one.toml"
    recipe.write_text(
        'name = "one"\n[[runs]]\nname = "gd"\nmethod = "gd"\nwith = ["layers"]\n'
        "config.layers = { last = 1 }\ntrainer = { max_steps = 1, batch_size = 2, progress = false }\n"
    )
    res = cli(
        "recipe",
        "run",
        str(recipe),
        "--model",
        str(tiny_model),
        "--data",
        str(tiny_data),
        "-o",
        str(tmp_path / "o"),
        "--set",
        "runs.0.trainer.learning_rate=1e-3",
    )
    assert res.returncode == 0, res.stderr
    assert "[gd] training: gd with layers" in res.stdout
    saved = json.loads((tmp_path / "o" / "gd" / "unlearn_config.json").read_text())
    assert saved["trainer"]["learning_rate"] == 1e-3 and saved["config"]["layers"]["last"] == 1
    res = cli("recipe", "run", str(recipe), "-o", str(tmp_path / "p"))
    assert res.returncode == 2 and "no model; give --model" in res.stderr
    listed = json.loads(cli("plugins", "--available", "--json").stdout)
    kinds: dict[str, Any] = {r["name"]: r for r in listed if r["kinds"] == ["recipe"]}
    assert kinds["zjuklab"]["methods"] == ["npo", "lora", "merge"] and kinds["zjuklab"]["installed"]
