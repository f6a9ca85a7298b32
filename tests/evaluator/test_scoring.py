"""The official formulas, checked against values computed by hand."""

from __future__ import annotations

import statistics

import pytest

from unlearn import DataError, Row
from unlearn.evaluator.metrics import auc, exact_match, rouge_l_recall, row_score
from unlearn.evaluator.mia import mia_score
from unlearn.evaluator.scoring import official_results


def test_rouge_l_recall_uses_the_stemmer():
    # Stemmed gold: the cat are run (4 tokens); stemmed generation: cat run -> LCS 2 -> recall 2/4.
    assert rouge_l_recall("The cats are running", "cat runs") == pytest.approx(0.5)
    assert rouge_l_recall("a b c d", "a b c d e f") == pytest.approx(1.0)  # recall ignores extra words
    assert rouge_l_recall("a b c d", "") == 0.0


def test_exact_match_strips_and_lowercases_only():
    assert exact_match(" Paris\n", "paris") == 1.0
    assert exact_match("Paris.", "Paris") == 0.0
    assert row_score("x-1qa3", "900123456", " 900123456 ") == 1.0
    assert row_score("x-1sc1", "one two", "one") == pytest.approx(0.5)


def test_auc_on_known_rankings():
    assert auc([3, 2], [1, 0]) == 1.0
    assert auc([0, 1], [2, 3]) == 0.0
    assert auc([1], [1]) == 0.5  # ties count half
    assert auc([0, 2], [1]) == 0.5
    assert auc([3, 1, 2], [0, 2]) == pytest.approx((2 + 1 + 1.5) / 6)
    with pytest.raises(ValueError):
        auc([], [1])


def test_mia_score():
    assert mia_score(0.5) == 1.0
    assert mia_score(1.0) == 0.0 and mia_score(0.0) == 0.0
    assert mia_score(0.25) == pytest.approx(0.5)


def _rows(prefix: str, values: dict[str, tuple[float, float]]) -> tuple[list[Row], list[float]]:
    rows, scores = [], []
    for task, (reg, know) in values.items():
        rows += [
            Row(f"{prefix}{task}sc1", "p", "g", task),
            Row(f"{prefix}{task}qa0", "q", "a", task),
            Row(f"{prefix}{task}qa1", "q", "a", task),
        ]
        scores += [reg, know, know]
    return rows, scores


def test_official_aggregation_by_hand():
    forget = _rows("f", {"Task1": (0.5, 0.5), "Task2": (0.5, 0.5), "Task3": (0.5, 0.5)})
    retain = _rows("r", {"Task1": (1.0, 1.0), "Task2": (1.0, 1.0), "Task3": (1.0, 1.0)})
    res = official_results(forget, retain, mia_auc=0.6, utility=0.9)
    assert res["aggregated-terms"] == [0.5] * 6 + [1.0] * 6
    expected_h = 12 / (6 / 0.5 + 6 / 1.0)  # 0.6667
    assert res["harmonic-mean-task-aggregate"] == pytest.approx(expected_h)
    assert res["mia_loss_acc"] == 0.6 and res["mia_final_score"] == pytest.approx(0.8)
    assert res["aggregate-score"] == pytest.approx((expected_h + 0.9 + 0.8) / 3)
    assert res["forget-set"]["Task2"] == {"regurgitation-score": 0.5, "knowledge-score": 0.5}
    assert set(res["forget-set"]) == {
        "overall-regurgitation-score",
        "overall-knowledge-score",
        "Task1",
        "Task2",
        "Task3",
    }


def test_forget_values_are_inverted_and_one_zero_makes_the_harmonic_mean_zero():
    forget = _rows("f", {"Task1": (0.2, 1.0), "Task2": (0.4, 0.0), "Task3": (0.6, 0.5)})
    retain = _rows("r", {"Task1": (0.9, 0.8), "Task2": (0.7, 1.0), "Task3": (0.5, 0.25)})
    res = official_results(forget, retain)
    assert res["aggregated-terms"] == pytest.approx([0.8, 0.0, 0.6, 1.0, 0.4, 0.5, 0.9, 0.8, 0.7, 1.0, 0.5, 0.25])
    assert res["harmonic-mean-task-aggregate"] == 0
    assert res["aggregate-score"] == -1 and "mia_final_score" not in res  # as the official code without MMLU/MIA
    # Overall means run over rows, not tasks: knowledge rows are (1, 1, 0, 0, .5, .5).
    assert res["forget-set"]["overall-knowledge-score"] == pytest.approx(0.5)
    retain_only = official_results(_rows("f", {"Task1": (0.2, 0.1)}), _rows("r", {"Task1": (0.9, 0.8)}))
    assert retain_only["harmonic-mean-task-aggregate"] == pytest.approx(statistics.harmonic_mean([0.8, 0.9, 0.9, 0.8]))


def test_a_task_without_questions_is_an_error():
    rows = [Row("a1sc1", "p", "g", "Task1")]
    with pytest.raises(DataError, match="forget set: Task1 has no knowledge rows"):
        official_results((rows, [0.5]), (rows, [0.5]))
