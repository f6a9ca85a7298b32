"""IdkNLL: the refusal's NLL by hand, its gradient, the retain terms, conformance, forgetting."""

from __future__ import annotations

import math

from unlearn_plugin_idk import IdkConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change
from unlearn.engine import CachedReference

BATCH = hand_batch([[-100, 1, 1]], [[-100, 1, 1]], [[-100, 2, 2]])


def _loss(config: IdkConfig) -> tuple[FixedLogits, object]:
    model = FixedLogits(label_logits(0.25), label_logits(0.5), alternate=label_logits(0.2, label=2))
    reference = CachedReference(lambda: FixedLogits(label_logits(0.25), label_logits(0.5)))
    return model, compute_loss(method="idk", config=config, ctx=LossContext(model, BATCH, 0, reference))


def test_refusal_nll_by_hand_and_its_gradient():
    model, out = _loss(IdkConfig(retain_nll_weight=0.0))
    assert math.isclose(float(out.loss.detach()), -math.log(0.2), rel_tol=1e-5)
    out.loss.backward()
    assert model.alternate.grad[0, 0, 2] < 0  # descending raises the refusal's tokens
    assert model.forget.grad is None or float(model.forget.grad.abs().sum()) == 0  # the answer is not used


def test_retain_terms_add_with_their_weights():
    _, out = _loss(IdkConfig(forget_weight=2.0, retain_nll_weight=0.5, retain_kl_weight=1.0))
    expected = 2 * -math.log(0.2) + 0.5 * -math.log(0.5) + 0.0  # KL 0: retain logits equal the reference's
    assert math.isclose(float(out.loss.detach()), expected, rel_tol=1e-5)


def test_conforms(tmp_path):
    assert_conforms("idk", tmp_path)


def test_forget_nll_rises_while_retain_nll_moves_less(tmp_path):
    nll_change("idk", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.4)
