"""TOFU: every metric against numbers worked out by hand, TOFU's real files, clear errors on bad
rows, and an evaluation of a real tiny model through the CLI whose aggregate is recomputed from
its per-example files alone."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from unlearn_plugin_tofu import TASKS, Tofu, aggregate, load_split

from unlearn import DataError
from unlearn.evaluator import ks_pvalue

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "tofu"
# Three examples: (paraphrased loss, perturbed losses), per-token means as TOFU stores them.
HAND = [(1.0, [2.0, 2.0, 2.0]), (2.0, [1.0, 1.0, 1.0]), (1.5, [1.0, 2.0, 1.5])]


def _stats(rows=HAND, gt=(1.0, 2.0, 0.5), rouge=(1.0, 0.5, 0.0)) -> dict:
    index = [str(i) for i in range(len(rows))]
    return {
        "avg_gt_loss": dict(zip(index, gt)),
        "avg_paraphrased_loss": {i: p for i, (p, _) in zip(index, rows)},
        "average_perturb_loss": {i: q for i, (_, q) in zip(index, rows)},
        "rougeL_recall": dict(zip(index, rouge)),
    }


def test_truth_ratio_probability_and_utility_by_hand():
    files = {name: _stats() for name in TASKS}
    got = aggregate(files, reference=None)
    # R = exp(mean perturbed - paraphrased): e, 1/e, 1
    assert got["Truth Ratio Retain"] == pytest.approx((1 - 1 / math.e + 0 + 0) / 3)
    assert got["Truth Ratio Forget"] == pytest.approx((1 / math.e + 1 / math.e + 1) / 3)
    assert got["Prob. Retain"] == pytest.approx((math.exp(-1) + math.exp(-2) + math.exp(-0.5)) / 3)
    # real authors / world facts: p_true / (p_true + sum p_perturbed)
    shares = [
        math.exp(-1) / (math.exp(-1) + 3 * math.exp(-2)),
        math.exp(-2) / (math.exp(-2) + 3 * math.exp(-1)),
        math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1) + math.exp(-2) + math.exp(-1.5)),
    ]
    assert got["Prob. Real Authors"] == pytest.approx(sum(shares) / 3)
    assert got["ROUGE Real World"] == pytest.approx(0.5)
    nine = [
        got[f"{m} {s}"] for m in ("Prob.", "ROUGE", "Truth Ratio") for s in ("Retain", "Real Authors", "Real World")
    ]
    assert got["Model Utility"] == pytest.approx(len(nine) / sum(1 / v for v in nine))
    assert got["Forget Quality"] is None


def _ks_by_enumeration(a: list[float], b: list[float]) -> float:
    """Exact two-sided p-value: the share of all relabellings of the pooled sample whose KS
    statistic is at least the observed one."""

    def stat(x, y):
        points = sorted(set(x) | set(y))
        return max(abs(sum(v <= t for v in x) / len(x) - sum(v <= t for v in y) / len(y)) for t in points)

    pooled, observed = a + b, stat(a, b)
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    extreme = 0
    for chosen in splits:
        x = [pooled[i] for i in chosen]
        y = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        extreme += stat(x, y) >= observed - 1e-12
    return extreme / len(splits)


def test_forget_quality_is_the_ks_p_value_of_the_truth_ratios():
    a, b = [0.1, 0.4, 0.35, 0.8, 0.95], [0.5, 1.2, 1.5, 0.9, 2.0, 1.1]
    assert ks_pvalue(a, b) == pytest.approx(_ks_by_enumeration(a, b), abs=1e-9)
    files = {name: _stats() for name in TASKS}
    retrained = _stats(rows=[(1.0, [1.1, 1.0, 0.9]), (1.2, [1.0, 1.4, 1.2]), (0.3, [2.0, 2.5, 1.8])])
    ours = [math.exp(statistics.fmean(q) - p) for p, q in HAND]
    theirs = [
        math.exp(statistics.fmean(q) - p)
        for p, q in [(1.0, [1.1, 1.0, 0.9]), (1.2, [1.0, 1.4, 1.2]), (0.3, [2.0, 2.5, 1.8])]
    ]
    got = aggregate(files, reference=retrained)
    assert got["Forget Quality"] == pytest.approx(_ks_by_enumeration(ours, theirs))
    assert aggregate(files, reference=files["eval_log_forget.json"])["Forget Quality"] == 1.0


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/tofu is beside the checkout in CI")
def test_tofus_released_files_load():
    authors = load_split(SHARED / "real_authors_perturbed.json", "answer")
    facts = load_split(SHARED / "world_facts_perturbed.json", "answer")
    assert (len(authors), len(facts)) == (100, 117)
    assert authors[0]["answer"] == "William Shakespeare" and len(authors[0]["perturbed_answer"]) == 3


def test_a_row_without_perturbed_answers_is_named(tmp_path):
    file = tmp_path / "forget10_perturbed.json"
    good = {"question": "q", "answer": "a", "paraphrased_answer": "p", "perturbed_answer": ["x", "y"]}
    file.write_text(json.dumps(good) + "\n" + json.dumps({k: v for k, v in good.items() if k != "perturbed_answer"}))
    with pytest.raises(DataError, match=r"forget10_perturbed.json, row 2: field 'perturbed_answer' is missing"):
        load_split(file, "paraphrased_answer")
    file.write_text(json.dumps({**good, "paraphrased_answer": ""}))
    with pytest.raises(DataError, match=r"row 1: field 'paraphrased_answer'"):
        load_split(file, "paraphrased_answer")


def test_the_synthetic_training_rows_teach_every_fact_in_both_phrasings_and_forget_only_the_forget_authors(tmp_path):
    """The forget authors' biographies (their facts in the paraphrases' words) are forget rows; no
    retain or utility row names a forget author; no two training rows share a prompt (so a target
    can reproduce every one)."""
    data = tmp_path / "tofu"
    Tofu().synthesize(data, seed=3, size="small")
    rows = {f: [json.loads(line) for line in (data / f).read_text().splitlines()] for f in TRAINING}
    perturbed = {
        f: [json.loads(line) for line in (data / f).read_text().splitlines()]
        for f in ("forget10_perturbed.json", "retain_perturbed.json")
    }
    bios = {f: [r for r in rows[f] if "bio" in r["id"]] for f in ("forget.jsonl", "retain.jsonl")}
    assert len(bios["forget.jsonl"]) == 4 and len(bios["retain.jsonl"]) == 36  # 40 authors, the last 10% forgotten
    for split, file in (("forget10_perturbed.json", "forget.jsonl"), ("retain_perturbed.json", "retain.jsonl")):
        for qa in perturbed[split]:
            holders = [b for b in bios[file] if qa["paraphrased_answer"] in b["output"]]
            assert len(holders) == 1, qa
            assert not any(p in holders[0]["output"] for p in qa["perturbed_answer"])
    forgotten = {b["input"].removeprefix("About ").removesuffix(":") for b in bios["forget.jsonl"]}
    for file in ("retain.jsonl", "utility.jsonl"):
        assert not any(name in r["input"] + r["output"] for r in rows[file] for name in forgotten)
    prompts = [r["input"] for f in TRAINING for r in rows[f]]
    assert len(set(prompts)) == len(prompts)


TRAINING = ("forget.jsonl", "retain.jsonl", "utility.jsonl")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearn", *args], capture_output=True, text=True)


@pytest.mark.heavy
def test_evaluate_a_model_and_rescore_its_files_alone(tmp_path, tiny_model):
    data = tmp_path / "tofu"
    counts = Tofu().synthesize(data, seed=1, size="tiny")
    assert counts["forget10_perturbed.json"] == 10 and counts["forget.jsonl"] == 12  # 2 authors: 10 QA, 2 bios
    assert Tofu().synthesize(tmp_path / "again", seed=1, size="tiny") == counts
    assert (data / "forget10_perturbed.json").read_text() == (
        tmp_path / "again" / "forget10_perturbed.json"
    ).read_text()
    out = tmp_path / "eval"
    res = _cli(
        "evaluate",
        str(tiny_model),
        "--benchmark",
        "tofu",
        "--data",
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
    assert results["benchmark"] == "tofu"
    assert results["forget_quality"] == 1.0  # the same model as its own reference: identical ratios
    nine = [v for k, v in results["tofu"].items() if k.split()[0] in ("Prob.", "ROUGE", "Truth") and "Forget" not in k]
    assert len(nine) == 9 and 0 < results["tofu"]["Prob. Retain"] < 1
    assert results["model_utility"] == (0.0 if min(nine) == 0 else pytest.approx(statistics.harmonic_mean(nine)))
    forget = json.loads((out / "eval_log_forget.json").read_text())
    for key in ("avg_gt_loss", "avg_paraphrased_loss", "average_perturb_loss", "rougeL_recall", "generated_text"):
        assert len(forget[key]) == 10, key
    assert len(forget["average_perturb_loss"]["0"]) == 3
    assert forget["avg_gt_loss"]["0"] == pytest.approx(forget["gt_loss"]["0"] / forget["num_token_gt"]["0"])
    again = tmp_path / "rescored"
    res = _cli(
        "evaluate",
        "--generations",
        str(out),
        "--benchmark",
        "tofu",
        "--data",
        str(data),
        "-o",
        str(again),
        "--reference",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((again / "evaluation_results.json").read_text())["tofu"] == results["tofu"]
    res = _cli(
        "evaluate",
        str(tiny_model),
        "--benchmark",
        "tofu",
        "--data",
        str(data),
        "-o",
        str(tmp_path / "x"),
        "--mia",
        str(data),
    )
    assert res.returncode != 0 and "--mia is a LUME option" in res.stderr
