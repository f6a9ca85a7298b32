"""``unlearn plugins new NAME``: a ready-to-install method plugin package."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from unlearn import ConfigError

from .conformance import PLACEHOLDER_SUMMARY

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
license = "Apache-2.0"  # choose your plugin's licence
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

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl


class ${cls}Config(Config):
    """Settings of $name; defaults come from the paper (unknown keys are errors)."""

    retain_weight: float = Field(1.0, ge=0, description="Weight of the retain NLL.")


@hookimpl
def register_methods(register: Register) -> None:
    # `unlearn plugins check` fails until this placeholder summary is replaced.
    register("$name", config=${cls}Config, kind="loss", summary="$summary", uses_retain=True)


@hookimpl
def compute_loss(method: str, config: ${cls}Config, ctx: LossContext) -> LossOutput:
    forget_nll = ctx.nll("forget")  # scalar: mean over every answer token of the batch
    out = LossOutput(-forget_nll, {"forget_nll": forget_nll})
    return out.add_term("retain_nll", config.retain_weight, lambda: ctx.nll("retain"))
'''

_README = """\
# unlearn-plugin-$name

The `$name` unlearning method for unlearn (`unlearn-core`).

    pip install -e .
    unlearn plugins                      # lists $name
    unlearn run --method $name --model MODEL --data DATA --output OUT
    pytest tests

Describe the loss, its paper and its defaults here.
"""

_TEST = """\
from unlearn.devkit import assert_conforms


def test_conforms_to_unlearn(tmp_path):
    assert_conforms("$name", tmp_path)
"""


def create_plugin(name: str, directory: Path) -> Path:
    """Write ``directory/unlearn-plugin-NAME`` and return it; refuses to overwrite."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(
            f"plugin name {name!r}: use lower-case letters, digits and underscores, starting with a letter"
        )
    folder = Path(directory) / f"unlearn-plugin-{name}"
    if folder.exists():
        raise ConfigError(f"{folder} already exists")
    values = {
        "name": name,
        "module": name,
        "cls": "".join(p.title() for p in name.split("_")),
        "summary": PLACEHOLDER_SUMMARY.format(name=name),
    }
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
