"""Names a package loads on first use (PEP 562), so that importing it costs nothing: ``import
unlearn`` loads no torch, and ``unlearn --help`` imports no application's heavy modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, names: dict[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``, whose ``names`` map each
    published name to the module defining it (``.module`` within the package, or absolute). A name
    that is the module itself (``{"benchmarks": ".benchmarks"}``) gives the module."""

    def load(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name], package)
        value = module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
        vars(importlib.import_module(package))[name] = value  # later lookups skip this function
        return value

    def listing() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *names})

    return list(names), load, listing
