"""What the installed plugins registered, kept between commands, so that ``unlearn --help`` and
``unlearn plugins`` answer without importing a single plugin (and so without torch or
transformers, which most plugins import).

Every other command loads the plugins and refreshes this record when it is out of date. The
record is used only while nothing it was made from changed: the interpreter, each entry point
of the ``unlearn`` group (name, target, distribution, version), the size and modification time of
every Python file of each entry point's package and of the ``unlearn`` package, and the
environment variables that change what loads. When it cannot be used (first run, a plugin
installed or edited, ``UNLEARN_STRICT_PLUGINS`` or ``UNLEARN_TRACE_HOOKS`` set) the plugins are
loaded as for any command. ``UNLEARN_PLUGIN_CACHE=0`` turns it off. It lives in
``$UNLEARN_CACHE_DIR``, else ``$XDG_CACHE_HOME/unlearn``, else ``~/.cache/unlearn``: one file per
environment, written atomically; a folder that cannot be written only costs the speed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

FORMAT = 1
_ENV = ("UNLEARN_LOAD_PLUGINS",)  # change what loads, so part of the fingerprint
_BYPASS = ("UNLEARN_STRICT_PLUGINS", "UNLEARN_TRACE_HOOKS")  # must really load the plugins


def cache_file() -> Path | None:
    """This environment's record, or None where the cache is turned off."""
    if os.environ.get("UNLEARN_PLUGIN_CACHE", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    if any(os.environ.get(name, "").strip() not in {"", "0"} for name in _BYPASS):
        return None
    if os.environ.get("UNLEARN_CACHE_DIR"):
        folder = Path(os.environ["UNLEARN_CACHE_DIR"])
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unlearn"
    return folder / f"plugins-{hashlib.sha256(sys.prefix.encode()).hexdigest()[:16]}.json"


def _package_dir(module: str) -> Path | None:
    """The folder (or file) holding ``module``'s package, found without importing the plugin: the
    top-level package, or for ``unlearn.x.y`` the subpackage ``unlearn.x`` (each of ours lives in
    its own folder of the checkout; importing ``unlearn`` itself loads nothing)."""
    parts = module.split(".")
    name = ".".join(parts[:2]) if parts[0] == "unlearn" and len(parts) > 1 else parts[0]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    origin = Path(spec.origin)
    return origin.parent if spec.submodule_search_locations else origin


def fingerprint() -> str:
    """A hash of everything the record depends on (see the module docstring)."""
    from unlearn.engine import ENTRY_POINT_GROUP

    digest = hashlib.sha256(json.dumps([FORMAT, sys.executable, sys.version, *map(os.environ.get, _ENV)]).encode())
    roots = {_package_dir("unlearn.engine"), _package_dir("unlearn.cli")}
    roots.add(Path(sys.modules["unlearn"].__file__).parent)  # type: ignore[arg-type]
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        dist = getattr(ep, "dist", None)
        digest.update(json.dumps([ep.name, ep.value, dist and dist.name, dist and dist.version]).encode())
        roots.add(_package_dir(ep.module))
    for root in sorted(r for r in roots if r is not None):
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            try:
                stat = path.stat()
            except OSError:
                continue
            digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()


def load() -> dict[str, Any] | None:
    """The record, if there is one and it is up to date."""
    path = cache_file()
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("fingerprint") == fingerprint() else None


def refresh(build: Callable[[], dict[str, Any]]) -> None:
    """Store ``build()`` with the current fingerprint, unless the stored record is up to date
    (then ``build`` is not called)."""
    path = cache_file()
    if path is None:
        return
    current = fingerprint()
    try:
        if path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("fingerprint") == current:
            return
        record = {"format": FORMAT, "fingerprint": current, **build()}
        path.parent.mkdir(parents=True, exist_ok=True)
        from unlearn import write_json

        write_json(path, record)
    except (OSError, TypeError, ValueError):
        pass  # an unwritable cache folder only costs speed
