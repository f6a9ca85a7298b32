"""Organiser-mode fixtures: a tiny memorised target, private rows, MIA documents and a utility
file (the arena), and competition files over it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from unlearn.devkit import FORGET_ROWS, RETAIN_ROWS, build_tiny_model, write_rows


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("arena")
    build_tiny_model(root / "target", memorise=FORGET_ROWS + RETAIN_ROWS, steps=60)
    private = root / "private"
    write_rows(private / "forget.jsonl", FORGET_ROWS)
    write_rows(private / "retain.jsonl", RETAIN_ROWS)
    docs = lambda rows: [{"id": r.id, "document": r.input + r.output} for r in rows]  # noqa: E731
    for name, rows in (("mia_member", FORGET_ROWS), ("mia_nonmember", RETAIN_ROWS)):
        (private / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs(rows)))
    write_rows(private / "utility.jsonl", RETAIN_ROWS[:2])
    return root


@pytest.fixture
def competition_file(arena: Path) -> Callable[..., Path]:
    """``competition_file(folder, entrants, limit=60, **settings)``: a competition file in ``folder``
    over the arena, ``settings`` overriding its fields."""
    return lambda folder, entrants, limit=60, **settings: _write(arena, folder, entrants, limit, **settings)


def _write(arena: Path, folder: Path, entrants: list, limit: float, **settings: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    private = arena / "private"
    path = folder / "competition.json"
    path.write_text(
        json.dumps(
            {
                "name": "test",
                "model": str(arena / "target"),
                "forget": str(private / "forget.jsonl"),
                "retain": str(private / "retain.jsonl"),
                "mia": str(private),
                "utility": str(private / "utility.jsonl"),
                "output_dir": "out",
                "time_limit_s": limit,
                "grace_s": 3,
                "stall_s": 6,
                "max_new_tokens": 24,
                "entrant_devices": "cpu",
                "trainer": {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3},
                "entrants": entrants,
                **settings,
            }
        )
    )
    return path
