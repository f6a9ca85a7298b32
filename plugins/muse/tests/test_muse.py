"""MUSE: PrivLeak and its AUC direction on hand-made numbers, the answer cut, clear errors, and a
real tiny model through the CLI whose numbers are recomputed from its log alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from unlearn_plugin_muse import Muse, cut_answer, knowmem_prompts, mink_auc, privleak, read_json

from unlearn import DataError


def test_privleak_and_the_auc_direction_by_hand():
    # memorised forget passages score lower (more "member") than every holdout passage: AUC 0
    assert mink_auc(forget=[1.0, 1.5], holdout=[3.0, 4.0]) == 0.0
    assert mink_auc(forget=[3.0, 4.0], holdout=[1.0, 1.5]) == 1.0
    # P(holdout scores below forget), ties half: pairs (2,1) 0, (2,3) 1, (3,1) 0, (3,3) 0.5
    assert mink_auc(forget=[1.0, 3.0], holdout=[2.0, 3.0]) == pytest.approx(1.5 / 4)
    assert privleak(0.0, 0.5) == -100.0 and privleak(0.5, 0.5) == 0.0
    assert privleak(0.6, 0.48) == pytest.approx((0.6 - 0.48) / 0.48 * 100)


def test_knowmem_prompts_and_the_answer_cut():
    icl = [{"question": "Q1?", "answer": "A1"}]
    assert knowmem_prompts([{"question": "Q2?", "answer": "A2"}], icl) == [
        "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: "
    ]
    assert cut_answer("Mara Quell\n\nQuestion: next") == "Mara Quell"
    assert cut_answer("Mara Quell\nQuestion: x") == "Mara Quell" and cut_answer("Mara Question: y") == "Mara "


def test_bad_files_are_named(tmp_path):
    (tmp_path / "knowmem").mkdir()
    (tmp_path / "knowmem" / "forget_qa.json").write_text(
        json.dumps([{"question": "q", "answer": "a"}, {"question": "q"}])
    )
    with pytest.raises(DataError, match=r"forget_qa.json, item 2: field 'answer' is missing"):
        read_json(tmp_path, "knowmem_forget")
    with pytest.raises(DataError, match=r"privleak/holdout.json: missing"):
        read_json(tmp_path, "privleak_holdout")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearn", *args], capture_output=True, text=True)


@pytest.mark.heavy
def test_evaluate_a_model_and_rescore_its_log(tmp_path, tiny_model):
    data = tmp_path / "muse"
    counts = Muse().synthesize(data, seed=0, size="tiny")
    assert counts["privleak/holdout.json"] == 8 and counts["forget.jsonl"] == 16
    holdout = set(json.loads((data / "privleak" / "holdout.json").read_text()))
    trained = (data / "forget.jsonl").read_text() + (data / "retain.jsonl").read_text()
    assert not any(p.split(". ", 1)[1] in trained for p in holdout)  # holdout passages are never training rows
    out = tmp_path / "eval"
    res = _cli(
        "evaluate",
        str(tiny_model),
        "--benchmark",
        "muse",
        "-d",
        str(data),
        "-o",
        str(out),
        "--reference",
        str(tiny_model),
        "--max-new-tokens",
        "8",
    )
    assert res.returncode == 0, res.stderr
    results = json.loads((out / "evaluation_results.json").read_text())
    assert results["benchmark"] == "muse" and results["privleak"] == 0.0  # its own reference
    assert results["privleak_minkpp"] == 0.0  # Min-K%++ beside MUSE's Min-40%, same reference
    assert 0 <= results["verbmem_f"] <= 100 and 0 <= results["knowmem_r"] <= 100
    log = json.loads((out / "log.json").read_text())
    assert len(log["generations"]["verbmem_f"]) == 8 and len(log["privleak_min40"]["holdout"]) == 8
    pp = log["privleak_minkpp"]
    assert results["muse"]["forget_holdout_Min-K%++"] == mink_auc(pp["forget"], pp["holdout"])
    assert pp["forget"] != log["privleak_min40"]["forget"]  # another attack's scores
    again = tmp_path / "again"
    res = _cli(
        "evaluate",
        "--generations",
        str(out),
        "--benchmark",
        "muse",
        "-d",
        str(data),
        "-o",
        str(again),
        "--reference",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    rescored = json.loads((again / "evaluation_results.json").read_text())
    assert {k: rescored[k] for k in Muse.headline} == {k: results[k] for k in Muse.headline}
    # Against the AUC MUSE published for its retrained News model (constants.py: 0.4772).
    published = tmp_path / "published"
    res = _cli("evaluate", "--generations", str(out), "--benchmark", "muse", "-d", str(data), "-o", str(published),
               "--reference", "published:news")  # fmt: skip
    assert res.returncode == 0, res.stderr
    found = json.loads((published / "evaluation_results.json").read_text())
    auc = results["muse"]["forget_holdout_Min-40%"]
    assert found["muse"]["auc_retrained"] == 0.4772
    assert found["privleak"] == pytest.approx((auc - 0.4772) / 0.4772 * 100)
    assert found["privleak_minkpp"] is None  # MUSE publishes no Min-K%++ AUC
    res = _cli("evaluate", "--generations", str(out), "--benchmark", "muse", "-d", str(data), "-o",
               str(tmp_path / "y"), "--reference", "published:wiki")  # fmt: skip
    assert res.returncode != 0 and "MUSE publishes the retrained AUC of published:news, published:books" in res.stderr
    res = _cli(
        "evaluate",
        str(tiny_model),
        "--benchmark",
        "muse",
        "-d",
        str(data),
        "-o",
        str(tmp_path / "x"),
        "--split",
        "forget10",
    )
    assert res.returncode != 0 and "--split: the muse benchmark does not take it" in res.stderr
