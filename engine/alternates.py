"""Alternate answers for forget rows: what DPO/IdkDPO, IdkNLL, AltPO and ReLearn learn in place of
the forgotten answer. They come from a row's own ``alternate`` field, a refusal set, or a rewrite
of the answer with its specific values swapped (a cheap, offline stand-in for ReLearn's and
AltPO's model-written augmentations)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from unlearn.data import Encoded, Row, encode
from unlearn.errors import ConfigError, DataError

from .settings import AlternateSettings

Want = Literal["refusal", "rewrite"]
REFUSALS_FILE = Path(__file__).with_name("refusals.txt")  # 119 refusals written for this project
_MONTHS = "January February March April May June July August September October November December".split()
_KEEP = {"I", "The", "A", "An", "In", "On", "Of", "And", "At", "To", "By", "For", "Mr", "Mrs", "Ms", "Dr", "St"}
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_WORD = re.compile(r"(?<![\w@.])[A-Z][a-z]+(?:'s)?\b|\d+")
_NAME_RUN = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+(?:'s)?)+\b")  # "Mira Castell", "Port Emmaville"


def read_refusals(path: Path | None = None) -> list[str]:
    """Refusal answers, one per line: plain text or a JSON string (as TOFU's ``idontknow.jsonl``).
    Without ``path``, the built-in list. A file with no answer, or a line holding JSON that is not
    a string, is an error naming the file and line."""
    file = Path(path) if path is not None else REFUSALS_FILE
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"alternate.refusals: {file}: cannot be read ({type(exc).__name__})") from None
    out = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text[:1] in '"[{':
            try:
                text = json.loads(text)
            except json.JSONDecodeError:
                pass  # plain text that happens to start with a quote
            if not isinstance(text, str):
                raise DataError(f"{file}, line {number}: expected a refusal (text or a JSON string)")
        if text.strip():
            out.append(text.strip())
    if not out:
        raise DataError(f"{file}: no refusals in this file")
    return out


def _stem(word: str) -> str:
    return word[:-2] if word.endswith("'s") else word


def _entities(text: str) -> set[str]:
    """Capitalised words that stand inside a sentence somewhere in ``text``, or next to another
    capitalised word (names, places, titles), not sentence openers or function words."""
    found = {_stem(w) for run in _NAME_RUN.findall(text) for w in run.split()}
    for match in _WORD.finditer(text):
        before = text[: match.start()].rstrip()
        if not match.group(0).isdigit() and before and before[-1] not in '.!?:\n"':
            found.add(_stem(match.group(0)))
    return found - _KEEP - set(_MONTHS)


def rewrite(text: str, rng: random.Random, names: Sequence[str], context: str = "") -> str:
    """``text`` with its specific values swapped, consistently within the text: each run of digits
    for other digits of the same length (dates, phone numbers and IDs keep their shape), month
    names for other months, e-mail addresses for made-up ones, and names (capitalised words that
    stand inside a sentence somewhere in the text or in ``context``, e.g. the prompt) for words
    drawn from ``names``. Returns ``text`` unchanged when it has no such value."""
    text = _EMAIL.sub(lambda m: f"{rng.choice(names).lower()}{rng.randint(1, 99)}@example.org", text)
    entities, swaps = _entities(context + " " + text), {}

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        stem, tail = _stem(word), word[len(_stem(word)) :]
        if stem not in swaps:
            if stem.isdigit() and len(stem) == 4 and stem[:2] in ("19", "20"):  # a year stays a year
                swaps[stem] = str(int(stem) + rng.choice([-1, 1]) * rng.randint(1, 15))
            elif stem.isdigit():
                new = "".join(rng.choice("0123456789") for _ in stem)
                swaps[stem] = new if new != stem else str((int(stem) + 1) % 10 ** len(stem)).zfill(len(stem))
            elif stem in _MONTHS:
                swaps[stem] = rng.choice([m for m in _MONTHS if m != stem])
            elif stem in entities:
                swaps[stem] = rng.choice([n for n in names if n != stem] or ["Someone"])
            else:
                return word
        return swaps[stem] + tail

    return _WORD.sub(swap, text)


def choose_alternates(
    rows: Sequence[Row], want: Want, settings: AlternateSettings, per_row: int, seed: int, where: str = "forget rows"
) -> tuple[list[list[str]], dict[str, Any]]:
    """Each forget row's alternate answers (``per_row`` of them, fewer only where a row carries
    fewer of its own) and a summary for the run report.

    ``settings.source``: ``auto`` takes refusals for a method that wants them, and for one that
    wants rewrites each row's own ``alternate`` where it has one, else a rewrite; ``rows`` requires
    every row to carry ``alternate``; ``refusals`` and ``rewrite`` force that source. A rewrite
    that would change nothing (no value to swap) falls back to a refusal, and is counted.
    """
    source = settings.source
    if source == "auto":
        source = "refusals" if want == "refusal" else "rows-or-rewrite"
    refusals = read_refusals(settings.refusals) if source != "rows" else []  # rewrites fall back to one
    names: list[str] = []
    if source in ("rewrite", "rows-or-rewrite"):
        # names are swapped for other names of the same rows, so a rewrite stays in the domain
        names = sorted(set().union(*(_entities(r.input + " " + r.output) for r in rows)))
        names = names if len(names) > 3 else ["Avery", "Morgan", "Quinn", "Rowan", "Sasha", "Tamsin"]
    out: list[list[str]] = []
    counts = {"own": 0, "refusal": 0, "rewrite": 0, "fallback_refusal": 0}
    for row in rows:
        rng = random.Random(f"{seed}:{row.id}")  # the same alternates for a row whatever the file order
        if source in ("rows", "rows-or-rewrite") and row.alternate:
            out.append(list(row.alternate[:per_row]))
            counts["own"] += 1
        elif source == "rows":
            raise DataError(
                f"{where}: row {row.id!r} has no 'alternate' (alternate.source = 'rows' needs one on every forget row)"
            )
        elif source == "refusals":
            out.append(rng.sample(refusals, min(per_row, len(refusals))))
            counts["refusal"] += 1
        else:
            alts = [rewrite(row.output, rng, names, row.input) for _ in range(per_row)]
            alts = list(dict.fromkeys(a for a in alts if a != row.output))  # distinct, and not the answer
            if not alts:
                alts, counts["fallback_refusal"] = [rng.choice(refusals)], counts["fallback_refusal"] + 1
            else:
                counts["rewrite"] += 1
            out.append(alts)
    return out, {"source": settings.source, "per_row": per_row, "rows": {k: v for k, v in counts.items() if v}}


def encode_alternates(
    rows: Sequence[Row], texts: Sequence[Sequence[str]], tokenizer: Any, max_length: int, append_eos: bool = True
) -> list[list[tuple[int, Encoded]]]:
    """Tokenise each row's prompt with each of its alternates (as ``encode``); per forget row, a
    list of ``(position in the flat list of all alternates, example)``. The position is the row
    key of the ``"alternate"`` split (``index``, the reference cache)."""
    out, position = [], 0
    for row, alts in zip(rows, texts):
        encoded = encode([Row(row.id, row.input, a, row.task) for a in alts], tokenizer, max_length, append_eos)
        out.append([(position + k, e) for k, e in enumerate(encoded)])
        position += len(encoded)
    return out
