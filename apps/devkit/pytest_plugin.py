"""pytest fixtures of the test kit, loaded in every pytest run where ``unlearn-core`` is installed
(``pytest11`` entry point). Session fixtures build the tiny things once per test session.

- ``tiny_model``: a tiny random OLMo model and its tokenizer (read it, never write to it);
- ``memorised_model``: the same, trained until it has memorised the tiny forget and retain rows;
- ``tiny_data``: a folder with ``forget.jsonl`` and ``retain.jsonl`` of the tiny rows;
- ``plugin_host``: a fresh ``PluginHost`` with every installed plugin loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from unlearn.engine import PluginHost


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from unlearn.devkit import cached_tiny_model

    return cached_tiny_model()


@pytest.fixture(scope="session")
def memorised_model() -> Path:
    from unlearn.devkit import cached_tiny_model

    return cached_tiny_model(memorise_steps=150)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unlearn.devkit import write_tiny_data

    return write_tiny_data(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture
def plugin_host() -> PluginHost:
    from unlearn.engine import PluginHost

    return PluginHost()
