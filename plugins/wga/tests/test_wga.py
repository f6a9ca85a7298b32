"""WGA: the weighted ascent by hand, beta 0 is gradient ascent, the gradient, conformance, forgetting."""

from __future__ import annotations

import math

from unlearn_plugin_wga import WGAConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change

BATCH = hand_batch([[-100, 1, 1]], [[-100, 1, 1]])


def _loss(config: WGAConfig, p: float = 0.25) -> tuple[FixedLogits, object]:
    model = FixedLogits(label_logits(p), label_logits(0.5))
    return model, compute_loss(method="wga", config=config, ctx=LossContext(model, BATCH, 0))


def test_wga_by_hand_and_its_gradient():
    model, out = _loss(WGAConfig(beta=1.0, retain_nll_weight=0.0))
    assert math.isclose(float(out.loss.detach()), 0.25 * math.log(0.25), rel_tol=1e-5)
    out.loss.backward()
    # d(w log p)/dz_label = w (1 - p) with w held fixed: 0.25 * 0.75 over 2 tokens, per position
    assert math.isclose(float(model.forget.grad[0, 0, 1]), 0.25 * 0.75 / 2, rel_tol=1e-5)


def test_beta_zero_is_gradient_ascent_and_unlikely_tokens_weigh_less():
    _, ga = _loss(WGAConfig(beta=0.0, retain_nll_weight=0.0))
    assert math.isclose(float(ga.loss.detach()), math.log(0.25), rel_tol=1e-5)
    _, unlikely = _loss(WGAConfig(beta=1.0, retain_nll_weight=0.0), p=0.01)
    assert abs(float(unlikely.loss.detach())) < 0.05 * abs(math.log(0.01))  # weighted by p = 0.01


def test_retain_nll_term():
    _, out = _loss(WGAConfig(retain_nll_weight=2.0))
    assert math.isclose(float(out.loss.detach()), 0.25 * math.log(0.25) + 2 * math.log(2), rel_tol=1e-5)


def test_conforms(tmp_path):
    assert_conforms("wga", tmp_path)


def test_forget_nll_rises_while_retain_nll_moves_less(tmp_path):
    nll_change("wga", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.1)
