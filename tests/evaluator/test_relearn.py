"""ReLearn's metrics: Brunet, Honoré, entities and KFR/KRR by hand, a real NLI classifier as the
judge, and `unlearn evaluate --relearn` writing them beside the official scores."""

from __future__ import annotations

import math

import pytest
from helpers import constant_nli_classifier

from unlearn import ConfigError
from unlearn.evaluator.relearn import (
    brunet_index,
    entities,
    entity_score,
    honore_statistic,
    linguistic_score,
    nli_judge,
    relearn_metrics,
)


def test_lexical_richness_by_hand():
    # "the cat saw the dog ." : N 6 tokens, V 5 distinct, V1 4 used once
    assert math.isclose(brunet_index("The cat saw the dog."), 6 ** (5**-0.165))
    assert math.isclose(honore_statistic("The cat saw the dog."), 100 * math.log(6) / (1 - 4 / 5 + 0.1))
    assert brunet_index("") == 1000.0 and honore_statistic("Yes") == 0.0
    # every word once: Honoré's denominator is epsilon, as ReLearn's
    assert math.isclose(honore_statistic("alpha beta"), 100 * math.log(2) / 0.1)
    parts = (1 / (1 + 4.0), 1 / (1 + 2.0), 1 / (1 + 1 / 3.0))  # sigmoid(-log 4), sigmoid(-log 2), sigmoid(log 3)
    assert math.isclose(linguistic_score(4.0, 2.0, 3.0), 3 / sum(1 / p for p in parts))


def test_entities_leave_out_the_question_and_stop_words():
    question = "What is Mira Castell's phone number?"
    assert entities("Mira Castell's number is 555 0192 or mira@me.com.", question) == {"555", "0192", "mira@me.com"}
    assert entity_score("It is 555 0193.", "555 0192", question) == 0.5
    assert entity_score("I don't know.", "555 0192", question) == 0.0


def _row(rid, gold, answer, nli=None, ppl=2.0):
    return {
        "id": rid,
        "question": "Where did Ansel Drury live?",
        "gold": gold,
        "answer": answer,
        "ppl": ppl,
        "nli": nli,
    }


def test_kfr_and_krr_by_hand():
    forget = [
        _row("aqa0", "In Kessland by the fjord.", "In Kessland by the fjord."),  # all entities kept: not forgotten
        _row("bqa0", "In Kessland by the fjord.", "Somewhere in Verden."),  # none kept: forgotten
        _row("cqa0", "In Kessland by the fjord.", "In Kessland by the fjord.", nli="contradiction"),  # judged
        _row("dsc1", "x", "a longer answer that counts only for the linguistic score"),
    ]
    retain = [
        _row("eqa0", "Near the old harbour of Tarn.", "Near the old harbour of Tarn."),
        _row("fqa0", "Near the old harbour of Tarn.", "Near the old harbour of Tarn.", nli="contradiction"),
        _row("gqa0", "Near the old harbour of Tarn.", "I don't know.", ppl=None),
    ]
    results, details = relearn_metrics(forget, retain)
    assert results["KFR"] == pytest.approx(2 / 3) and results["KRR"] == pytest.approx(1 / 3)
    assert [d["counted"] for d in details["forget"]] == [False, True, True]
    assert results["PPL_F"] == 2.0 and results["PPL_R"] == 2.0  # the empty-perplexity row is left out
    assert results["LS_F"] == pytest.approx(linguistic_score(2.0, results["BI_F"], results["HS_F"]))


def test_a_real_nli_classifier_judges_and_its_contradictions_count(tmp_path):
    judge = nli_judge(str(constant_nli_classifier(tmp_path / "nli", label=2)))
    labels = judge([("The sky is green.", "The sky is blue."), ("A.", "B.")])
    assert labels == ["contradiction", "contradiction"]
    with pytest.raises(ConfigError, match="not a sequence-classification model"):
        nli_judge(str(tmp_path))
