"""``unlearn plugins new NAME``: a ready-to-install method plugin package."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from .errors import ConfigError

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "unlearn-plugin-$name"
version = "0.1.0"
description = "The $name unlearning method for unlearn"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["unlearn-core>=0.1"]

[project.entry-points.unlearn]
$name = "unlearn_plugin_$module"

[tool.setuptools]
packages = ["unlearn_plugin_$module"]
"""

_MODULE = '''\
"""The $name unlearning method.

Loss: describe the formula here and cite the paper it comes from.
"""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from unlearn import LossContext, LossOutput, hookimpl


class ${cls}Config(BaseModel):
    """Settings of $name; defaults come from the paper."""

    model_config = ConfigDict(extra="forbid")

    retain_weight: float = Field(1.0, ge=0, description="Weight of the retain NLL.")


@hookimpl
def register_methods(register: Callable[..., None]) -> None:
    register("$name", config=${cls}Config, kind="loss", summary="One line on what $name does", uses_retain=True)


@hookimpl
def compute_loss(method: str, config: ${cls}Config, ctx: LossContext) -> LossOutput:
    forget_nll = ctx.nll("forget")
    retain_nll = ctx.nll("retain")
    loss = -forget_nll + config.retain_weight * retain_nll
    return LossOutput(loss, {"forget_nll": forget_nll, "retain_nll": retain_nll})
'''

_README = """\
# unlearn-plugin-$name

The `$name` unlearning method for [unlearn](https://github.com/unlearn).

    pip install -e .
    unlearn plugins                      # lists $name
    unlearn run --method $name --model MODEL --data DATA --output OUT
    pytest tests

Describe the loss, its paper and its defaults here.
"""

_TEST = '''\
from unlearn.testing import assert_conforms


def test_conforms_to_unlearn(tmp_path):
    assert_conforms("$name", tmp_path)
'''


def create_plugin(name: str, directory: Path) -> Path:
    """Write ``directory/unlearn-plugin-NAME`` and return it; refuses to overwrite."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"plugin name {name!r}: use lower-case letters, digits and underscores, starting with a letter")
    folder = Path(directory) / f"unlearn-plugin-{name}"
    if folder.exists():
        raise ConfigError(f"{folder} already exists")
    values = {"name": name, "module": name, "cls": "".join(p.title() for p in name.split("_"))}
    files = {
        "pyproject.toml": _PYPROJECT,
        f"unlearn_plugin_{name}/__init__.py": _MODULE,
        "README.md": _README,
        f"tests/test_{name}.py": _TEST,
    }
    for rel, template in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(values), encoding="utf-8")
    return folder
