"""The registry: ``registry.toml``, the index of known plugins and recipes, and installing a
known plugin with pip. ("Registry" means only this; what plugins announce to the host are their
*methods*.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unlearn.engine import UnlearnError, describe_error


class RegistryError(UnlearnError, ValueError):
    """The registry file is missing or malformed, or names no such plugin."""


REGISTRY_FILE = "registry.toml"


class KnownPlugin(BaseModel):
    """One known plugin, as listed in ``registry.toml``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    distribution: str = Field(description="The pip distribution name, unlearn-plugin-<name>.")
    path: str | None = Field(None, description="Folder of the package in this repository, if it lives here.")
    kind: Literal["loss", "parameters", "post-process", "benchmark", "attack"]
    summary: str
    reference: str = Field(description="Paper or source the plugin implements.")


class KnownRecipe(BaseModel):
    """One recipe, as listed in ``registry.toml``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str = Field(description="The recipe file in this repository.")
    plugins: list[str] = Field(description="The methods it needs.")
    summary: str
    reference: str


def checkout_root() -> Path | None:
    """The repository checkout we run from (it has registry.toml and plugins/), if any."""
    here = Path(__file__).resolve().parent
    for start in (Path.cwd(), here):
        for folder in (start, *start.parents):
            if (folder / REGISTRY_FILE).is_file() and (folder / "plugins").is_dir():
                return folder
    return None


def registry_path() -> Path:
    """``$UNLEARN_REGISTRY``, else the checkout's registry.toml, else the copy shipped in the package."""
    if os.environ.get("UNLEARN_REGISTRY"):
        return Path(os.environ["UNLEARN_REGISTRY"])
    root = checkout_root()
    return root / REGISTRY_FILE if root else Path(__file__).resolve().parent / REGISTRY_FILE


def _read(path: Path | None) -> tuple[Path, dict]:
    path = path or registry_path()
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path}: registry file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: cannot parse: {exc}") from None


def _tables(path: Path, data: dict, section: str, model: type[BaseModel]) -> dict:
    found = {}
    for name, table in (data.get(section) or {}).items():
        try:
            found[name] = model.model_validate({"name": name, **table})
        except ValidationError as exc:
            raise RegistryError(describe_error(exc, prefix=f"{section}.{name}", source=str(path))) from None
    return found


def load_registry(path: Path | None = None) -> dict[str, KnownPlugin]:
    """The ``[plugins.*]`` tables."""
    return _tables(*_read(path), "plugins", KnownPlugin)


def load_recipe_index(path: Path | None = None) -> dict[str, KnownRecipe]:
    """The ``[recipes.*]`` tables."""
    return _tables(*_read(path), "recipes", KnownRecipe)


def install_command(name: str, editable: bool = False, pip_args: list[str] | None = None) -> list[str]:
    """The pip command that installs registered plugin ``name`` into this interpreter.

    From a checkout the local folder is installed (so unreleased changes are used); elsewhere
    the distribution comes from the package index.
    """
    registry = load_registry()
    if name not in registry:
        raise RegistryError(f"{name!r} is not in the registry ({', '.join(sorted(registry))})")
    known = registry[name]
    root = checkout_root()
    target = known.distribution
    if root and known.path and (root / known.path / "pyproject.toml").is_file():
        target = str(root / known.path)
    elif editable:
        raise RegistryError(f"--editable needs a checkout holding {known.path or name}")
    cmd = [sys.executable, "-m", "pip", "install", *(pip_args or [])]
    return [*cmd, "-e", target] if editable else [*cmd, target]


def install(name: str, editable: bool = False, pip_args: list[str] | None = None) -> int:
    cmd = install_command(name, editable, pip_args)
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd)
