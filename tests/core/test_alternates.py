"""Alternate answers: validation of the field, refusal sets (ours and TOFU's file), rewrites,
how a run pairs each forget row with its alternates, and every alternate-aware method composed
with LoRA and with layer selection."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import ConfigError, DataError, PairedDataset, Row, encode, load_rows
from unlearn.devkit import FORGET_ROWS, RETAIN_ROWS, write_rows
from unlearn.engine import (
    REPORT_FILE,
    AlternateSettings,
    choose_alternates,
    encode_alternates,
    read_refusals,
    rewrite,
    run,
)
from unlearn.evaluator import answer_nll

TOFU_REFUSALS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tofu" / "idontknow.jsonl"
# a user's clone has no ../shared: the cases that read TOFU's file skip there
needs_tofu = pytest.mark.skipif(not TOFU_REFUSALS.is_file(), reason="needs ../shared/data/tofu/idontknow.jsonl")
NEW_METHODS = ["dpo", "idk", "altpo", "undial", "wga", "satimp", "ceu", "relearn"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "row 2: field 'alternate' is empty"),
        ([], "row 2: field 'alternate' is empty"),
        (["fine", "  "], "row 2: field 'alternate' is empty"),
        (3, "row 2: field 'alternate' must be a string or a list of strings, got int"),
        (["fine", 5], "row 2: field 'alternate' must be a string or a list of strings, got int"),
        ({"text": "x"}, "row 2: field 'alternate' must be a string or a list of strings, got dict"),
    ],
)
def test_a_bad_alternate_names_the_file_row_and_field(tmp_path, value, message):
    records = [FORGET_ROWS[0].record(), {**FORGET_ROWS[1].record(), "alternate": value}]
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DataError, match=message) as err:
        load_rows(tmp_path / "forget.jsonl")
    assert str(tmp_path / "forget.jsonl") in str(err.value)


def test_alternates_load_from_jsonl_and_parquet(tmp_path):
    rows = [Row(r.id, r.input, r.output, r.task, ("I don't know.",) if i else ()) for i, r in enumerate(FORGET_ROWS)]
    write_rows(tmp_path / "forget.jsonl", rows)
    # a parquet column holds null where a row has no alternate; a single string is one alternate
    records = [{**r.record(), "alternate": None} for r in FORGET_ROWS]
    records[1]["alternate"] = ["One.", "Two."]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "forget.parquet")
    assert load_rows(tmp_path / "forget.jsonl") == rows
    loaded = load_rows(tmp_path / "forget.parquet")
    assert [r.alternate for r in loaded[:3]] == [(), ("One.", "Two."), ()]


@needs_tofu
def test_refusal_sets_ours_and_tofus():
    ours = read_refusals()
    assert len(ours) >= 100 and len(set(ours)) == len(ours)
    tofu = read_refusals(TOFU_REFUSALS)  # plain lines, as TOFU ships idontknow.jsonl
    assert len(tofu) == sum(1 for line in TOFU_REFUSALS.read_text().splitlines() if line.strip())
    assert not set(ours) & set(tofu)  # ours were written for this project


def test_a_refusal_file_with_json_lines_and_a_bad_line(tmp_path):
    good = tmp_path / "r.jsonl"
    good.write_text('"No idea."\nI cannot say.\n\n')
    assert read_refusals(good) == ["No idea.", "I cannot say."]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{"text": "not a string"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: expected a refusal"):
        read_refusals(bad)


def test_a_rewrite_swaps_values_consistently_and_keeps_their_shape():
    text = "Mira Castell was born on March 3, 1971; call 555-019-2834. Castell's email is mira@me.com."
    out = rewrite(text, random.Random(0), ["Avery", "Quinn", "Rowan"])
    assert out != text
    for value in ("Mira", "Castell", "1971", "2834", "mira@me.com", "March"):
        assert value not in out
    words = out.split()
    assert words[2:4] == ["was", "born"] and words[0] in ("Avery", "Quinn", "Rowan")
    assert out.count(words[1]) == 2  # the same name swapped the same way in both places
    digits = [w for w in out.replace(";", " ").replace(",", " ").replace(".", " ").split() if w[:1].isdigit()]
    assert [len(d) for d in digits] == [1, 4, 12]  # 3, 1971, 555-019-2834 keep their shape
    assert rewrite("The rubber chicken.", random.Random(0), ["Avery"]) == "The rubber chicken."


def test_choosing_alternates_by_source():
    rows = [FORGET_ROWS[0], Row("own", "Q?", "The answer is Zed.", "Task1", ("Own one.", "Own two."))]
    refusals, info = choose_alternates(rows, "refusal", AlternateSettings(), 2, seed=1)
    assert all(len(a) == 2 and set(a) <= set(read_refusals()) for a in refusals)
    assert info == {"source": "auto", "per_row": 2, "rows": {"refusal": 2}}
    again, _ = choose_alternates(rows[::-1], "refusal", AlternateSettings(), 2, seed=1)
    assert again[::-1] == refusals  # a row's alternates do not depend on the file order
    rewrites, info = choose_alternates(rows, "rewrite", AlternateSettings(), 3, seed=1)
    assert rewrites[1] == ["Own one.", "Own two."] and info["rows"]["own"] == 1
    assert rewrites[0] and all(a != rows[0].output for a in rewrites[0])
    forced, _ = choose_alternates(rows, "rewrite", AlternateSettings(source="rewrite"), 1, seed=1)
    assert forced[1] != ["Own one."]
    plain = [Row("plain", "Q?", "the rubber chicken.", "Task1")]
    fallback, info = choose_alternates(plain, "rewrite", AlternateSettings(), 1, seed=1)
    assert fallback[0][0] in read_refusals() and info["rows"] == {"fallback_refusal": 1}
    with pytest.raises(DataError, match=r"forget.jsonl: row 'plain' has no 'alternate'"):
        choose_alternates(plain, "rewrite", AlternateSettings(source="rows"), 1, seed=1, where="forget.jsonl")


def test_each_forget_row_is_trained_once_per_alternate(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = [["a.", "b.", "c."][: 1 + i % 3] for i in range(len(FORGET_ROWS))]
    alternates = encode_alternates(FORGET_ROWS, texts, tokenizer, 64)
    data = PairedDataset(encode(FORGET_ROWS, tokenizer, 64), encode(RETAIN_ROWS, tokenizer, 64), alternates=alternates)
    assert len(data) == sum(len(t) for t in texts) == 12
    keys = [data[i]["alternate"][0] for i in range(len(data))]
    assert keys == list(range(12))  # the key of the "alternate" split: position among all alternates
    assert [data[i]["forget"][0] for i in range(4)] == [0, 1, 1, 2]
    assert all("retain" in data[i] for i in range(len(data)))


@needs_tofu
def test_a_run_learns_tofus_refusals_and_reports_where_its_alternates_came_from(
    host, make_config, memorised_model, tmp_path
):
    config = make_config(
        model=str(memorised_model),
        method="idk",
        trainer={"max_steps": 6, "batch_size": 6, "learning_rate": 3e-3},
        alternate={"refusals": str(TOFU_REFUSALS), "per_row": 2},
    )
    out = run(config, host=host)
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["alternates"] == {"source": "auto", "per_row": 2, "rows": {"refusal": 6}}
    assert report["reference"] is None  # IdkNLL needs no reference model
    tokenizer = AutoTokenizer.from_pretrained(memorised_model)
    refusal, _ = choose_alternates(FORGET_ROWS, "refusal", config.alternate, 2, config.seed)
    asked = [Row(r.id, r.input, a[0], r.task) for r, a in zip(FORGET_ROWS, refusal)]
    before = answer_nll(AutoModelForCausalLM.from_pretrained(memorised_model), tokenizer, asked)
    after = answer_nll(AutoModelForCausalLM.from_pretrained(out), tokenizer, asked)
    assert sum(after) < 0.75 * sum(before)  # the refusals became likely answers to the forget prompts


@pytest.mark.parametrize("method", NEW_METHODS)
@pytest.mark.parametrize("with_", ["lora", "layers"])
def test_every_new_method_runs_with_lora_and_with_layers(host, make_config, method, with_):
    out = run(make_config(method=method, with_=[with_], trainer={"max_steps": 1}), host=host)
    assert (out / REPORT_FILE).is_file() and any(out.glob("*.safetensors"))


def test_an_output_that_would_hold_the_refusal_file_is_refused(host, make_config, tmp_path):
    folder = tmp_path / "refusals"
    folder.mkdir()
    (folder / "r.txt").write_text("No idea.\n")
    config = make_config(method="idk", output_dir=str(folder), alternate={"refusals": str(folder / "r.txt")})
    with pytest.raises(ConfigError, match="overlaps the input"):
        run(config, host=host, overwrite=True)
    assert (folder / "r.txt").read_text() == "No idea.\n"
