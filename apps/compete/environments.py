"""Per-entrant Python environments: a submission may declare its Python and extra packages; the
organiser builds one virtual environment per distinct declaration with the standard library's
``venv`` and pip, from the package index or a local wheelhouse, caches it, and runs the entrant
with its interpreter. A submission that declares nothing runs on the organiser's Python.

Where the declared Python is the organiser's version, the environment also sees the organiser's
packages (torch, transformers, ...) through a ``.pth`` file, *after* its own: a declared
``transformers==4.47.1`` wins over the organiser's, and nothing else has to be installed. Another
Python version sees only what its declaration installs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from .config import Entrant


class BuildError(Exception):
    """An environment could not be built; the message is one line (the resolver's first error)."""


def requirement_lines(requirements: list[str] | Path | None) -> list[str]:
    """The declared requirements, one per item: a list as given, a file's non-comment lines."""
    if requirements is None:
        return []
    if isinstance(requirements, Path):
        try:
            text = requirements.read_text(encoding="utf-8")
        except OSError as exc:
            raise BuildError(f"{requirements}: cannot be read ({exc.strerror})") from None
        return [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]
    return [r.strip() for r in requirements if r.strip()]


def interpreter(python: str | None) -> str:
    """The base interpreter: the organiser's, a path, or ``python3.12`` found on PATH for "3.12"."""
    if python is None:
        return sys.executable
    found = python if "/" in python else shutil.which(f"python{python}")
    if not found or not os.access(found, os.X_OK):
        raise BuildError(f"python {python!r}: no such interpreter on this machine")
    return found


def _version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise BuildError(f"python {python!r}: does not run")
    return out.stdout.strip()


def environment(entrant: Entrant, cache: Path, wheelhouse: Path | None) -> Path | None:
    """The entrant's environment folder (built now if not cached), or None for the organiser's own.

    Keyed by the interpreter and its version, the requirement lines and the wheelhouse's file
    names, so a changed declaration gets a new environment and an unchanged one is reused.
    Raises `BuildError` with the first error line pip printed.
    """
    lines = requirement_lines(entrant.requirements)
    if entrant.python is None and not lines:
        return None
    base = interpreter(entrant.python)
    version = _version(base)
    wheels = sorted(p.name for p in wheelhouse.iterdir()) if wheelhouse else None
    key = {"python": base, "version": version, "requirements": lines, "wheelhouse": wheels}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache / f"py{version}-{digest}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{folder.name}.lock", "w") as lock:  # parallel entrants build each one once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".ready").is_file():
            _build(folder, base, version, lines, wheelhouse, key)
    return folder


def python_of(folder: Path) -> Path:
    return folder / "bin" / "python"


def _build(folder: Path, base: str, version: str, lines: list[str], wheelhouse: Path | None, key: dict) -> None:
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)  # ours: a build cut short
    try:
        _fill(tmp, base, version, lines, wheelhouse, key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(folder)


def _fill(tmp: Path, base: str, version: str, lines: list[str], wheelhouse: Path | None, key: dict) -> None:
    _run([base, "-m", "venv", str(tmp)], "venv")
    if version == "{}.{}".format(*sys.version_info[:2]):  # the organiser's packages, after the entrant's own
        site = Path(sysconfig.get_paths(vars={"base": str(tmp), "platbase": str(tmp)})["purelib"])
        inherited = sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]
        (site / "_unlearn_organiser.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(inherited)))
    if lines:
        (tmp / "requirements.txt").write_text("".join(f"{ln}\n" for ln in lines))
        where = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
        pip = [str(python_of(tmp)), "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
        _run([*pip, *where, "-r", str(tmp / "requirements.txt")], "pip")
    (tmp / "declaration.json").write_text(json.dumps(key, indent=1))
    (tmp / ".ready").touch()


def _run(command: list[str], what: str) -> None:
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        text = out.stderr + out.stdout
        errors = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("ERROR:")]
        first = errors[0] if errors else next((ln.strip() for ln in text.splitlines() if ln.strip()), "no output")
        raise BuildError(f"{what} failed: {first[:300]}")
