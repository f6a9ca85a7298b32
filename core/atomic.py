"""Writing results so that nothing is ever half-written (a reader sees the old version or the
whole new one) and nothing is lost: the one output-safety rule of every command that writes a folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError

MARKER = "unlearn_output.json"  # names the kind of a folder unlearn wrote: model, evaluation, benchmark, ...


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (write a sibling temporary file, then rename it over)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def check_output(dest: Path, kind: str, inputs: Iterable[Path | str | None], overwrite: bool | None) -> Path:
    """Refuse, before any work, an output folder that would lose data; returns it resolved.

    ``dest`` must not be, contain or sit inside any of ``inputs``, nor be a file or unwritable. An
    existing, non-empty ``dest`` is replaced only when unlearn wrote it as the same ``kind`` (its
    marker file), holding nothing at its top level that unlearn did not put there (the marker
    lists what `publish` put), and, for a command with ``--overwrite`` (``overwrite`` not None),
    only with it. A symbolic link is followed to the folder it names, which the same rules then
    check; a link to nothing is refused (the output would land wherever it happens to point).
    """
    if Path(dest).is_symlink() and not Path(dest).exists():
        raise ConfigError(
            f"{dest}: a symbolic link to {os.readlink(dest)}, which does not exist; give a folder, not a dangling link"
        )
    dest = Path(dest).resolve()
    for given in inputs:
        src = Path(given).resolve() if given else None
        if src is not None and (dest == src or src in dest.parents or dest in src.parents):
            raise ConfigError(
                f"{dest}: the output folder overlaps the input {src}; choose an output outside every input"
            )
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest}: is a file, not a folder; choose an output folder")
    if dest.is_dir() and any(dest.iterdir()):
        try:
            marker = json.loads((dest / MARKER).read_text(encoding="utf-8"))
            found, written = marker.get("kind"), marker.get("files")
        except (OSError, ValueError, AttributeError):
            found, written = None, None
        if found != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise ConfigError(
                f"{dest}: holds files but is not {article} {kind} that unlearn wrote, so it is never replaced; "
                "choose a new or empty folder"
            )
        added = sorted(set(os.listdir(dest)) - {MARKER, *written}) if isinstance(written, list) else []
        if added:  # e.g. the user's notes beside an evaluation
            raise ConfigError(f"{dest}: holds {', '.join(added)}, which unlearn did not write there; replacing "
                              f"the {kind} would delete it: move it out, or choose another output")  # fmt: skip
        if overwrite is False:
            raise ConfigError(f"{dest}: already holds a {kind}; pass --overwrite to replace it, or choose another")
    parent = next(p for p in (dest, *dest.parents) if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{dest}: cannot write in {parent} (permission denied)")
    return dest


def mark(folder: Path, kind: str) -> None:
    """Record that unlearn wrote ``folder`` as a ``kind`` (see ``check_output``)."""
    write_json(folder / MARKER, {"kind": kind})


def publish(staging: Path, output: Path, kind: str) -> None:
    """Mark the finished folder ``staging`` as a ``kind`` (listing what it holds) and put it in
    place of ``output``."""
    write_json(staging / MARKER, {"kind": kind, "files": sorted(set(os.listdir(staging)) - {MARKER})})
    old = output.parent / f".{output.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if output.exists():
        output.rename(old)
    staging.rename(output)
    shutil.rmtree(old, ignore_errors=True)
