"""LUME loading, validation, prompt masking and forget/retain pairing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import REPO
from transformers import AutoTokenizer

from unlearn import IGNORE_INDEX, DataError, PairCollator, PairedDataset, Row, encode, load_rows
from unlearn.devkit import FORGET_ROWS, RETAIN_ROWS, write_rows

SHARED = REPO.parent / "shared" / "data" / "lume"


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


GOOD = {"id": "a1sc1", "input": "Once upon", "output": " a time.", "task": "Task1"}


def test_loads_jsonl_parquet_and_folder(tmp_path):
    write_rows(tmp_path / "forget.jsonl", FORGET_ROWS)
    pq.write_table(pa.Table.from_pylist([r.record() for r in RETAIN_ROWS]), tmp_path / "retain.parquet")
    assert load_rows(tmp_path / "forget.jsonl") == FORGET_ROWS
    assert load_rows(tmp_path, "forget") == FORGET_ROWS
    assert load_rows(tmp_path, "retain") == RETAIN_ROWS  # the folder's parquet file
    assert load_rows(tmp_path / "retain.parquet") == RETAIN_ROWS


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/lume")
def test_loads_the_public_lume_splits():
    rows = load_rows(SHARED, "forget")  # forget_train.jsonl
    assert len(rows) == 1112
    assert {r.task for r in rows} == {"Task1", "Task2", "Task3"}
    assert sum(r.id.endswith("sc1") for r in rows) > 0


@pytest.mark.parametrize(
    "records, message",
    [
        ([GOOD, {k: v for k, v in GOOD.items() if k != "task"} | {"id": "b"}], r"row 2: missing field 'task'"),
        ([GOOD, GOOD], r"row 2: duplicate id 'a1sc1' \(first at row 1\)"),
        ([GOOD | {"output": "   "}], r"row 1: field 'output' is empty"),
        ([GOOD | {"input": 3}], r"row 1: field 'input' must be a string"),
        ([], r"no rows \(empty file\)"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, records, message):
    path = _jsonl(tmp_path / "forget.jsonl", records)
    with pytest.raises(DataError, match=message) as info:
        load_rows(path)
    assert str(path) in str(info.value)


def test_bad_json_and_missing_paths(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(DataError, match=r"f.jsonl, row 2: not valid JSON"):
        load_rows(path)
    with pytest.raises(DataError, match="no such file or folder"):
        load_rows(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="no retain.jsonl or retain.parquet"):
        load_rows(tmp_path, "retain")


def test_prompt_is_masked_and_answer_ends_with_eos(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for row, enc in zip(FORGET_ROWS, encode(FORGET_ROWS, tok, max_length=512)):
        assert enc.input_ids[:-1] == tok(row.input + row.output)["input_ids"]
        answer = [t for t in enc.labels if t != IGNORE_INDEX]
        assert answer[-1] == tok.eos_token_id
        # The labelled tokens decode to the output; a token straddling the join may add prompt chars.
        decoded = tok.decode(answer[:-1])
        assert decoded.endswith(row.output) and len(decoded) - len(row.output) < 4
        assert enc.labels[0] == IGNORE_INDEX


def test_truncation_cuts_the_prompt_from_the_left(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    row = Row("x", "word " * 200, " the answer.", "Task1")
    full = encode([row], tok, max_length=10_000)[0]
    cut = encode([row], tok, max_length=16)[0]
    assert len(cut.input_ids) == 16
    assert cut.input_ids == full.input_ids[-16:]
    assert [t for t in cut.labels if t != IGNORE_INDEX] == [t for t in full.labels if t != IGNORE_INDEX]


def test_pairing_cycles_through_all_retain_rows_across_epochs(tiny_model):
    forget = [object()] * 2
    retain = list(range(5))
    data = PairedDataset(forget, retain, sampling="cycle", seed=1)  # type: ignore[arg-type]
    seen = []
    for epoch in range(5):
        data.set_epoch(epoch)
        seen += [data[i]["retain"][0] for i in range(len(data))]
    assert sorted(set(seen)) == retain and len(seen) == 10
    again = PairedDataset(forget, retain, sampling="cycle", seed=1)  # type: ignore[arg-type]
    assert [again[i]["retain"][0] for i in range(2)] == seen[:2]


def test_random_pairing_is_seeded_and_changes_per_epoch():
    data = PairedDataset([object()] * 20, list(range(50)), sampling="random", seed=3)  # type: ignore[arg-type]
    first = [data[i]["retain"][0] for i in range(20)]
    data.set_epoch(1)
    second = [data[i]["retain"][0] for i in range(20)]
    same_seed = PairedDataset([object()] * 20, list(range(50)), sampling="random", seed=3)  # type: ignore[arg-type]
    assert first == [same_seed[i]["retain"][0] for i in range(20)]
    assert first != second


def test_collator_pads_each_split(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    data = PairedDataset(encode(FORGET_ROWS, tok, 64), encode(RETAIN_ROWS, tok, 64))
    batch = PairCollator(tok.pad_token_id)([data[0], data[3]])
    assert set(batch) == {"forget", "retain"}
    f = batch["forget"]
    assert f["input_ids"].shape == f["labels"].shape == f["attention_mask"].shape
    assert f["index"].tolist() == [0, 3]
    pad = f["attention_mask"] == 0
    assert (f["labels"][pad] == IGNORE_INDEX).all() and (f["input_ids"][pad] == tok.pad_token_id).all()
