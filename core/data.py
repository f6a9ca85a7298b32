"""LUME rows: loading with validation, tokenisation with the prompt masked, and the paired
forget/retain batches every method receives."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import DataError

ROW_FIELDS = ("id", "input", "output", "task")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Row:
    """One LUME row. ``input + output`` (no separator) is the memorised text. A forget row may
    carry ``alternate`` answers (a refusal, or a rewrite without the fact) for methods that learn
    one instead of the forgotten ``output``."""

    id: str
    input: str
    output: str
    task: str
    alternate: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return self.input + self.output

    def record(self) -> dict[str, Any]:
        """The row as a jsonl/parquet record (``alternate`` only where there is one)."""
        fields = {"id": self.id, "input": self.input, "output": self.output, "task": self.task}
        return fields | ({"alternate": list(self.alternate)} if self.alternate else {})


def resolve_split(path: Path, split: str) -> Path:
    """A file for ``split`` ('forget' or 'retain'): the path itself, or the file in a folder.

    A folder may hold ``{split}.jsonl`` / ``{split}.parquet`` (the organisers' layout) or the
    public ``{split}_train.jsonl``.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in (f"{split}.jsonl", f"{split}.parquet", f"{split}_train.jsonl", f"{split}_train.parquet"):
            if (path / name).is_file():
                return path / name
        raise DataError(f"{path}: no {split}.jsonl or {split}.parquet in this folder")
    raise DataError(f"{path}: no such file or folder")


def read_records(path: Path) -> Iterable[tuple[int, Any]]:
    """(1-based row number, record) pairs from a jsonl or parquet file; a row that is not valid
    JSON or a file pyarrow cannot read is a ``DataError`` naming the file and row."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise DataError(f"{path}: cannot read parquet: {exc}") from None
        yield from enumerate(table.to_pylist(), start=1)
        return
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    yield number, json.loads(line)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}, row {number}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
                ) from None
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, row {number}: not valid JSON ({exc.msg})") from None


def load_rows(path: Path, split: str = "forget") -> list[Row]:
    """Load and validate LUME rows from a file or folder.

    Errors name the file and row: a missing or non-string field, empty ``input``/``output``, an
    ``alternate`` that is not a non-empty string or list of them, a duplicate ``id``, an empty file.
    """
    file = resolve_split(path, split)
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for number, record in read_records(file):
        where = f"{file}, row {number}"
        _check_fields(record, where)
        alternate = _alternates(record.get("alternate"), where)
        if record["id"] in seen:
            raise DataError(f"{where}: duplicate id {record['id']!r} (first at row {seen[record['id']]})")
        seen[record["id"]] = number
        rows.append(Row(*(record[name] for name in ROW_FIELDS), alternate))
    if not rows:
        raise DataError(f"{file}: no rows (empty file)")
    return rows


def _check_fields(record: Any, where: str) -> None:
    """Every row field present, a string, and not blank."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with fields {ROW_FIELDS}")
    for name in ROW_FIELDS:
        if name not in record:
            raise DataError(f"{where}: missing field {name!r} (a LUME row has {', '.join(ROW_FIELDS)})")
        if not isinstance(record[name], str):
            raise DataError(f"{where}: field {name!r} must be a string, got {type(record[name]).__name__}")
    for name in ROW_FIELDS:
        if not record[name].strip():
            raise DataError(f"{where}: field {name!r} is empty")


def _alternates(alternate: Any, where: str) -> tuple[str, ...]:
    """A row's optional ``alternate`` field as a tuple of answers (None, a parquet row without one,
    is absent); anything but a non-empty string or list of them is an error."""
    if alternate is None:
        return ()
    alternate = [alternate] if isinstance(alternate, str) else alternate
    bad = [a for a in alternate if not isinstance(a, str)] if isinstance(alternate, (list, tuple)) else [alternate]
    if bad:
        got = type(bad[0]).__name__
        raise DataError(f"{where}: field 'alternate' must be a string or a list of strings, got {got}")
    if not alternate or not all(a.strip() for a in alternate):
        raise DataError(f"{where}: field 'alternate' is empty (give at least one non-empty answer)")
    return tuple(alternate)


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad token, or EOS for tokenizers without one (as the official script)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@dataclass
class Encoded:
    """A tokenised row: ``labels`` equal ``input_ids`` on answer tokens, -100 on the prompt."""

    input_ids: list[int]
    labels: list[int]
    task: str = ""


def encode(rows: Sequence[Row], tokenizer: Any, max_length: int, append_eos: bool = True) -> list[Encoded]:
    """Tokenise ``input + output`` once and mask the prompt from the labels.

    A token counts as answer when it ends after the prompt's last character (so a token that
    straddles the join is trained on). If the text is too long the prompt is cut from the left,
    keeping the answer whole where it fits.
    """
    eos = tokenizer.eos_token_id
    out: list[Encoded] = []
    for row in rows:
        enc = tokenizer(row.text, add_special_tokens=True, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        cut = len(row.input)
        # Special tokens have offsets (0, 0) and count as prompt.
        answer = [end > cut for _, end in enc["offset_mapping"]]
        if append_eos and eos is not None:
            ids.append(eos)
            answer.append(True)
        first = answer.index(True) if True in answer else len(ids)
        if first == len(ids):
            raise DataError(f"row {row.id!r}: the output tokenises to nothing")
        if len(ids) > max_length:
            start = min(len(ids) - max_length, first)
            ids, answer = ids[start : start + max_length], answer[start : start + max_length]
        out.append(Encoded(ids, [t if a else IGNORE_INDEX for t, a in zip(ids, answer)], row.task))
    return out


class PairedDataset(torch.utils.data.Dataset):
    """Item i is ``{"forget": forget[i], "retain": <a retain example>}``, with ``"alternate"`` too
    when ``alternates`` are given.

    ``alternates`` holds, per forget row, its ``(key, example)`` alternates (see
    ``unlearn.engine.encode_alternates``); each (row, alternate) pair is then one item, so an
    epoch sees a row once per alternate. The retain partner comes from a seeded permutation of the
    retain set. ``cycle`` continues through that permutation from epoch to epoch, so with more
    retain than forget items all of them are used; ``random`` draws a fresh seeded partner per
    epoch. The trainer calls ``set_epoch``.
    """

    def __init__(
        self,
        forget: Sequence[Encoded],
        retain: Sequence[Encoded] | None = None,
        sampling: str = "cycle",
        seed: int = 0,
        alternates: Sequence[Sequence[tuple[int, Encoded]]] | None = None,
    ) -> None:
        self.forget = list(forget)
        self.retain = list(retain) if retain else []
        self.sampling = sampling
        self.seed = seed
        self.epoch = 0
        if alternates is not None:
            self.items = [(i, alt) for i, alts in enumerate(alternates) for alt in alts]
        else:
            self.items = [(i, None) for i in range(len(self.forget))]
        self._order = list(range(len(self.retain)))
        random.Random(seed).shuffle(self._order)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def retain_index(self, i: int) -> int:
        if self.sampling == "random":
            return random.Random(hash((self.seed, self.epoch, i))).randrange(len(self.retain))
        return self._order[(self.epoch * len(self) + i) % len(self.retain)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        row, alternate = self.items[i]
        item: dict[str, Any] = {"forget": (row, self.forget[row])}
        if alternate is not None:
            item["alternate"] = alternate
        if self.retain:
            j = self.retain_index(i)
            item["retain"] = (j, self.retain[j])
        return item


class RetainCycle:
    """Retain examples taken in order, wrapping around, as ``schedule`` items."""

    def __init__(self, retain: Sequence[Encoded]) -> None:
        if not retain:
            raise DataError("this method needs retain rows to cycle through")
        self.retain = retain
        self.cursor = 0

    def take(self, n: int) -> list[dict[str, tuple[int, Encoded]]]:
        rows = [(self.cursor + k) % len(self.retain) for k in range(n)]
        self.cursor += n
        return [{"retain": (j, self.retain[j])} for j in rows]


class ScheduledDataset(torch.utils.data.Dataset):
    """The items a method's ``schedule`` hook returned, served in that order."""

    def __init__(self, items: Sequence[dict[str, tuple[int, Encoded]]], batch_size: int, method: str) -> None:
        if not items:
            raise DataError(f"method {method!r} scheduled no training items")
        for start in range(0, len(items), batch_size):
            splits = {tuple(sorted(item)) for item in items[start : start + batch_size]}
            if len(splits) > 1:
                raise DataError(
                    f"method {method!r} scheduled items {start}..{start + batch_size - 1} with different splits "
                    f"{sorted(splits)}; every item of one batch (batch_size {batch_size}) must hold the same splits"
                )
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, tuple[int, Encoded]]:
        return self.items[i]


@dataclass
class PairCollator:
    """Pads each split of a list of paired items into tensors (right padding, -100 labels)."""

    pad_token_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        return {split: self.pad([item[split] for item in items]) for split in items[0]}

    def pad(self, examples: list[tuple[int, Encoded]]) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for _, e in examples)
        ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (_, e) in enumerate(examples):
            n = len(e.input_ids)
            ids[row, :n] = torch.tensor(e.input_ids)
            labels[row, :n] = torch.tensor(e.labels)
            mask[row, :n] = 1
        index = torch.tensor([i for i, _ in examples], dtype=torch.long)
        tasks = [e.task for _, e in examples]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "index": index, "task": tasks}
