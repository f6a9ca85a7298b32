"""Layer selection: after a real run every parameter outside the choice is bit-identical;
the choices resolve as documented; bad choices are clear errors; conformance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from unlearn_plugin_layers import LayersConfig, chosen_layers

from unlearn import ConfigError
from unlearn.devkit import assert_conforms, build_tiny_model, write_tiny_data
from unlearn.engine import PluginHost, RunConfig, run


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("layers")
    return build_tiny_model(root / "model", layers=3), write_tiny_data(root / "data")


def _changed(setup: tuple[Path, Path], out: Path, layers: dict) -> set[str]:
    model, data = setup
    config = RunConfig.model_validate(
        {
            "model": str(model),
            "data": str(data),
            "method": "gd",
            "with": ["layers"],
            "output_dir": str(out),
            "config": {"layers": layers},
            # weight decay would move every parameter the optimiser holds: frozen ones must not be held
            "trainer": {"max_steps": 3, "batch_size": 2, "learning_rate": 1e-2, "weight_decay": 0.1, "progress": False},
        }
    )
    before = load_file(model / "model.safetensors")
    after = load_file(run(config, host=PluginHost()) / "model.safetensors")
    assert after.keys() == before.keys()
    return {name for name in before if not torch.equal(before[name], after[name])}


def _layer(name: str) -> int | None:
    found = re.search(r"\.layers\.(\d+)\.", name)
    return int(found.group(1)) if found else None


def test_last_layer_only(setup, tmp_path):
    changed = _changed(setup, tmp_path / "o", {"last": 1})
    assert changed and {_layer(n) for n in changed} == {2}
    names = load_file(setup[0] / "model.safetensors").keys()
    assert changed == {n for n in names if _layer(n) == 2}  # every weight of that layer moved


def test_range_and_pattern(setup, tmp_path):
    changed = _changed(setup, tmp_path / "o", {"layer_range": [0, 1], "pattern": r"mlp\.down_proj"})
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}


def test_frozen_embeddings_alone(setup, tmp_path):
    changed = _changed(setup, tmp_path / "o", {})
    names = set(load_file(setup[0] / "model.safetensors").keys())
    assert changed == names - {"model.embed_tokens.weight", "lm_head.weight"}


@pytest.mark.parametrize(
    "config, layers",
    [
        ({"last": 2}, [2, 3]),
        ({"first": 2}, [0, 1]),
        ({"layer_range": [1, 2]}, [1, 2]),
        ({"last": 9}, [0, 1, 2, 3]),
        ({}, None),
    ],
)
def test_chosen_layers(config, layers):
    assert chosen_layers(LayersConfig(**config), 4) == layers


def test_bad_choices_are_named(setup, tmp_path):
    with pytest.raises(ValueError, match="not last and first"):
        LayersConfig(last=1, first=1)
    with pytest.raises(ConfigError, match="layer_range: layer 5 does not exist"):
        _changed(setup, tmp_path / "o", {"layer_range": [0, 5]})
    with pytest.raises(ConfigError, match="no parameter matches"):
        _changed(setup, tmp_path / "p", {"last": 1, "pattern": "no_such_module"})


def test_conforms(tmp_path):
    assert_conforms("layers", tmp_path)
