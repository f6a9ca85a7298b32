"""SatImp: the saturation-importance weight by hand, the gradient, conformance, forgetting."""

from __future__ import annotations

import math

from unlearn_plugin_satimp import SatImpConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change

BATCH = hand_batch([[-100, 1, 1]], [[-100, 1, 1]])


def test_satimp_by_hand_and_its_gradient():
    model = FixedLogits(label_logits(0.5), label_logits(0.5))
    config = SatImpConfig(forget_weight=1.0, retain_nll_weight=0.0)
    out = compute_loss(method="satimp", config=config, ctx=LossContext(model, BATCH, 0))
    weight = 0.5**5 * (1 - 0.5) ** 1
    assert math.isclose(float(out.loss.detach()), weight * math.log(0.5), rel_tol=1e-5)
    out.loss.backward()
    assert model.forget.grad[0, 0, 1] > 0  # descending lowers the forget label's logit


def test_certain_and_unlikely_tokens_both_weigh_little():
    def weighted(p: float) -> float:
        model = FixedLogits(label_logits(p), label_logits(0.5))
        config = SatImpConfig(forget_weight=1.0, retain_nll_weight=0.0)
        out = compute_loss(method="satimp", config=config, ctx=LossContext(model, BATCH, 0))
        return abs(float(out.loss.detach()) / math.log(p))  # the weight itself

    assert weighted(0.999) < 1e-3 and weighted(0.05) < 1e-5  # importance, then saturation
    assert weighted(5 / 6) > 0.05  # the peak of p**5 (1-p) is at p = 5/6


def test_conforms(tmp_path):
    assert_conforms("satimp", tmp_path)


def test_forget_nll_rises_while_retain_nll_moves_less(tmp_path):
    # At the default forget weight 0.1 the memorised tiny rows (p near 1) carry weights near 0;
    # a weight of 1 and a larger step show the direction in 4 steps.
    change = nll_change("satimp", tmp_path, trainer={"learning_rate": 3e-3}, config={"forget_weight": 1.0})
    change.assert_forgets(forget_factor=2.0, retain_share=0.25)
