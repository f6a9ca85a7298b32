"""Project fixtures. The tiny model, memorised model and tiny data come from the test kit's pytest
plugin (``unlearn.devkit.pytest_plugin``), as they do for any plugin package's tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import SMALL_NET, cli

from unlearn.engine import PluginHost, RunConfig


@pytest.fixture(scope="session", autouse=True)
def _plugin_cache(tmp_path_factory: pytest.TempPathFactory):
    """The CLI's plugin cache for this session's commands, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNLEARN_CACHE_DIR", str(tmp_path_factory.mktemp("plugin-cache")))
        yield


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


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded LUME default at size tiny, seed 0 (what `unlearn demo --size tiny` writes)."""
    from unlearn.bench.synth import generate

    out = tmp_path_factory.mktemp("tiny-bench") / "data"
    generate(out, seed=0, size="tiny")
    return out


@pytest.fixture(scope="session")
def tiny_target(tiny_bench: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The target built on ``tiny_bench`` with ``SMALL_NET``, and its card."""
    from unlearn.bench.target import TargetSettings, build_target

    out = tmp_path_factory.mktemp("tiny-target") / "target"
    return out, build_target(tiny_bench, out, TargetSettings(**SMALL_NET), progress=False)


@pytest.fixture(scope="session")
def tiny_oracle(tiny_bench: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The oracle of ``tiny_bench`` (same settings), built through the CLI's ``--oracle``."""
    out = tmp_path_factory.mktemp("tiny-oracle") / "oracle"
    sets = [f"--set={k}={v}" for k, v in SMALL_NET.items()]
    res = cli("target", "build", "-d", str(tiny_bench), "-o", str(out), "--oracle", "--device", "cpu", *sets)
    assert res.returncode == 0, res.stderr
    return out, json.loads((out / "target_card.json").read_text())
