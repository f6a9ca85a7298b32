"""The reference of an evaluation (``--reference``): the oracle, the model retrained without the
forget set. TOFU's forget quality, MUSE's PrivLeak and LUME's oracle column are only as right as
that model is the oracle of the data being evaluated, so it is checked before any number uses it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unlearn import ConfigError, DataError, Row, load_rows

TARGET_CARD = "target_card.json"  # written by `unlearn target build` beside the weights
CARD_KEY = "model_card"  # an evaluation's record of the card of the model it evaluated


def training_rows(data: Path) -> tuple[list[Row], dict[str, int]]:
    """Every forget, retain and utility row of a benchmark folder, and the rows per file.

    Reads ``{forget,retain}_{train,validation}.jsonl`` (ours and the public LUME layout) or
    ``{forget,retain}.jsonl``, plus ``utility.jsonl`` if present. Non-member files are never read.
    """
    if not data.is_dir():
        raise DataError(f"{data}: not a folder")
    names = [f"{split}_{part}.jsonl" for split in ("forget", "retain") for part in ("train", "validation")]
    names += ["forget.jsonl", "retain.jsonl", "utility.jsonl"]
    files = [data / n for n in names if (data / n).is_file()]
    if not any(f.name.startswith(("forget", "retain")) for f in files):
        raise DataError(f"{data}: no forget/retain files (expected forget_train.jsonl, retain_train.jsonl, ...)")
    rows: list[Row] = []
    counts: dict[str, int] = {}
    seen: dict[str, str] = {}
    for file in files:
        part = load_rows(file)
        for row in part:
            if row.id in seen:
                raise DataError(f"{file}: id {row.id!r} also appears in {seen[row.id]}")
            seen[row.id] = file.name
        rows += part
        counts[file.name] = len(part)
    return rows, counts


def rows_digest(rows: Sequence[Row]) -> str:
    """SHA-256 of rows' ``id``, ``input``, ``output`` and ``task`` in order: what a target card
    records of the data it was trained on, and what an oracle is checked against."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.id, r.input, r.output, r.task]).encode())
    return h.hexdigest()


def model_card(model: Path) -> dict[str, Any] | None:
    """What an evaluation records of a model that `unlearn target build` made: ``{"oracle": bool,
    "data_sha256": str}`` (`rows_digest` of the folder it was built from); None for any
    other model (a real checkpoint, an unlearned model)."""
    file = Path(model) / TARGET_CARD
    if not file.is_file():
        return None
    try:
        card = json.loads(file.read_text(encoding="utf-8"))
        return {"oracle": bool(card["oracle"]), "data_sha256": str(card["data"]["sha256"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{file}: not a target card (expected 'oracle' and 'data.sha256'; {exc})") from None


def check_reference(reference: Path, data: Path, results: str) -> None:
    """Refuse a ``reference`` that is not the oracle of the benchmark folder ``data``.

    ``reference`` is a model folder or an evaluation folder (whose ``results`` file records the
    card of the model it evaluated). A model built by `unlearn target build` must have been built
    with ``--oracle`` from rows with the same digest as ``data``'s (`training_rows`). A
    model or evaluation without a card (a real checkpoint, TOFU's published logs) is taken as
    given, as is ``data`` without rows a target is built from (TOFU's released files alone)."""
    reference = Path(reference)
    if (reference / "config.json").is_file():
        card, where = model_card(reference), reference / TARGET_CARD
    else:
        where = reference / results
        try:
            card = json.loads(where.read_text(encoding="utf-8")).get(CARD_KEY)
        except (OSError, ValueError, AttributeError):
            return  # not our evaluation: the benchmark's own reader says what is wrong with it
    if not card:
        return
    if not card.get("oracle"):
        raise ConfigError(
            f"{where}: a target, not an oracle (built without --oracle); the reference is the model retrained "
            "without the forget set: unlearn target build --oracle --data DATA --out DIR"
        )
    try:
        digest = rows_digest(training_rows(Path(data))[0])
    except DataError:
        return
    if card.get("data_sha256") != digest:
        raise ConfigError(
            f"{where}: this oracle was built from other rows (sha256 {str(card.get('data_sha256'))[:12]}) "
            f"than {data} ({digest[:12]}); build the oracle of this folder: unlearn target build --oracle "
            f"--data {data} --out DIR"
        )
