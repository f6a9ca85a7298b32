"""Fingerprints of everything that affects a result, so a re-run does only the missing work."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


def hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def model_stamp(model: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file in the target: cheap proof it was not written to."""
    return {
        str(p.relative_to(model)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(model.rglob("*"))
        if p.is_file()
    }


def cache_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_result(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / RESULT_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
