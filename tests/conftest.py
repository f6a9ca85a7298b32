"""Shared fixtures: a tiny random OLMo model with its tokenizer, and tiny LUME data, built once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from unlearn.config import RunConfig
from unlearn.plugins import PluginHost
from unlearn.testing import build_tiny_model, write_tiny_data


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture
def host() -> PluginHost:
    return PluginHost()


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
