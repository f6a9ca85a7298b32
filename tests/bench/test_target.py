"""The tiny target: it memorises its benchmark, loads with the Auto classes, resumes, and
rejects bad data clearly."""

from __future__ import annotations

import json

import pytest
from helpers import SMALL_NET, cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import ConfigError, DataError
from unlearn.bench import target as target_module
from unlearn.bench.target import TargetSettings, build_target, training_rows
from unlearn.evaluator.generation import greedy_generate


def test_training_rows_never_include_the_non_members(tiny_bench):
    rows, counts = training_rows(tiny_bench)
    assert set(counts) == {
        "forget_train.jsonl",
        "forget_validation.jsonl",
        "retain_train.jsonl",
        "retain_validation.jsonl",
        "utility.jsonl",
    }
    nonmembers = (tiny_bench / "mia_nonmember.jsonl").read_text() + (
        tiny_bench / "mia_nonmember_validation.jsonl"
    ).read_text()
    assert not [r for r in rows if r.text in nonmembers]


@pytest.mark.heavy
def test_a_tiny_build_memorises_and_loads_with_the_auto_classes(tiny_bench, tiny_target):
    out, card = tiny_target
    assert card["training"]["memorised"] and card["training"]["teacher_forced_exact"] == 1.0
    mem = card["memorisation"]
    for split, tasks in mem["tasks"].items():
        for task, values in tasks.items():
            assert values["regurgitation-score"] >= 0.9 and values["knowledge-score"] >= 0.9, (split, task, values)
    assert mem["mia_auc"] >= 0.95 and mem["utility_exact_match"] >= 0.9
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "olmo"
    lines = (tiny_bench / "forget_train.jsonl").read_text().splitlines()
    question = next(json.loads(line) for line in lines if "qa1" in line)
    assert greedy_generate(model, tokenizer, [question["input"]])[0] == question["output"]  # the SSN, then EOS
    saved = json.loads((out / "target_card.json").read_text())
    assert saved["data"]["never_trained_on"] == ["mia_nonmember.jsonl", "mia_nonmember_validation.jsonl"]
    assert "| forget_train | Task2 |" in (out / "README.md").read_text()
    assert not (out.parent / ".target.partial").exists()


def _mean_regurgitation(card: dict, prefix: str) -> float:
    values = [
        v["regurgitation-score"]
        for s, t in card["memorisation"]["tasks"].items()
        if s.startswith(prefix)
        for v in t.values()
    ]
    return sum(values) / len(values)


@pytest.mark.heavy
def test_the_oracle_never_sees_a_forget_row_and_forgets_what_the_target_memorised(tiny_bench, tiny_target, tiny_oracle):
    target, target_card = tiny_target
    oracle, card = tiny_oracle
    forget = {json.loads(line)["id"] for f in tiny_bench.glob("forget_*.jsonl") for line in f.read_text().splitlines()}
    rows, _ = training_rows(tiny_bench)
    assert card["oracle"] is True and not forget & set(card["data"]["trained_ids"])
    assert (
        set(card["data"]["trained_ids"]) == {r.id for r in rows} - forget
    )  # every other row, forget rows only left out
    assert set(target_card["data"]["trained_ids"]) == {r.id for r in rows}
    assert card["settings"] == target_card["settings"] and card["data"]["sha256"] == target_card["data"]["sha256"]
    # one tokenizer for both: trained on the rows the oracle keeps, so it favours no forget text
    assert AutoTokenizer.from_pretrained(oracle).get_vocab() == AutoTokenizer.from_pretrained(target).get_vocab()
    assert _mean_regurgitation(card, "retain") >= 0.9
    assert _mean_regurgitation(card, "forget") < 0.6 * _mean_regurgitation(target_card, "forget")
    assert target_card["memorisation"]["mia_auc"] >= 0.95 and abs(card["memorisation"]["mia_auc"] - 0.5) <= 0.25
    assert "retrained without" in (oracle / "README.md").read_text()


def test_an_interrupted_build_resumes_from_its_checkpoint(tiny_bench, tmp_path, monkeypatch):
    settings = TargetSettings(**SMALL_NET, max_epochs=4, check_every=2)
    calls = []
    original = target_module.teacher_forced_exact

    def interrupt_second_check(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(target_module, "teacher_forced_exact", interrupt_second_check)
    with pytest.raises(KeyboardInterrupt):
        build_target(tiny_bench, tmp_path / "t", settings, progress=False)
    assert not (tmp_path / "t").exists() and (tmp_path / ".t.partial" / "state.pt").is_file()
    monkeypatch.setattr(target_module, "teacher_forced_exact", original)
    longer = settings.model_copy(update={"max_epochs": 6})  # a larger budget still resumes
    card = build_target(tiny_bench, tmp_path / "t", longer, progress=False)
    assert [h["epoch"] for h in card["training"]["history"]] == [2, 4, 6]  # epoch 2 came from the first attempt
    assert card["training"]["epochs"] == 6
    AutoModelForCausalLM.from_pretrained(tmp_path / "t")
    with pytest.raises(ConfigError, match="already holds a target; pass --overwrite"):
        build_target(tiny_bench, tmp_path / "t", settings, progress=False)


def test_bad_data_gives_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no forget/retain files"):
        training_rows(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "forget_train.jsonl").write_text(
        '{"id": "a", "input": "q", "output": "a", "task": "Task1"}\n{"id": "b", "input": "q"}\n'
    )
    with pytest.raises(DataError, match=r"forget_train.jsonl, row 2: missing field 'output'"):
        training_rows(bad)
    res = cli("target", "build", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "no forget/retain files" in res.stderr
    res = cli("target", "build", "--data", str(bad), "--out", str(tmp_path / "o"), "--set", "hidden_sise=3")
    assert res.returncode == 2 and "--set.hidden_sise: unknown key" in res.stderr
