"""Project fixtures. The tiny model, memorised model and tiny data come from the test kit's pytest
plugin (``unlearn.devkit.pytest_plugin``), as they do for any plugin package's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from unlearn import PluginHost, RunConfig


@pytest.fixture
def host(plugin_host: PluginHost) -> PluginHost:
    """A fresh host with every installed plugin (the kit's ``plugin_host``)."""
    return plugin_host


@pytest.fixture
def make_config(tiny_model: Path, tiny_data: Path, tmp_path: Path):
    """RunConfig on the tiny model and data; keyword arguments override top-level fields."""

    def make(**overrides: Any) -> RunConfig:
        trainer = {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "progress": False}
        trainer.update(overrides.pop("trainer", {}))
        data = {
            "model": str(tiny_model),
            "data": str(tiny_data),
            "method": "gd",
            "output_dir": str(tmp_path / "out"),
            "trainer": trainer,
            **overrides,
        }
        return RunConfig.model_validate(data)

    return make
