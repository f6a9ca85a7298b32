"""AltPO: the preference of in-domain alternates by hand, the optional alternate NLL, five
alternates per row by default, conformance, forgetting."""

from __future__ import annotations

import math

from unlearn_plugin_altpo import AltPOConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change
from unlearn.engine import CachedReference, PluginHost

BATCH = hand_batch([[-100, 1, 1]], [[-100, 1, 1]], [[-100, 2, 2]])


def _loss(config: AltPOConfig) -> tuple[FixedLogits, object]:
    model = FixedLogits(label_logits(0.5), label_logits(0.5), alternate=label_logits(0.5, label=2))
    reference = CachedReference(lambda: FixedLogits(label_logits(0.5), label_logits(0.5), label_logits(0.25, label=2)))
    return model, compute_loss(method="altpo", config=config, ctx=LossContext(model, BATCH, 0, reference))


def test_altpo_by_hand_and_its_gradients():
    model, out = _loss(AltPOConfig(retain_nll_weight=0.0))
    margin = 2 * math.log(0.5 / 0.25) - 0.0  # the alternate gained 2 log 2; the forget answer as the reference
    expected = -(2 / 0.1) * math.log(1 / (1 + math.exp(-0.1 * margin)))
    assert math.isclose(float(out.loss.detach()), expected, rel_tol=1e-5)
    out.loss.backward()
    assert model.forget.grad[0, 0, 1] > 0 and model.alternate.grad[0, 0, 2] < 0


def test_alternate_nll_term():
    _, base = _loss(AltPOConfig(retain_nll_weight=0.0))
    _, more = _loss(AltPOConfig(retain_nll_weight=0.0, alternate_nll_weight=0.5))
    assert math.isclose(float(more.loss.detach()), float(base.loss.detach()) + 0.5 * math.log(2), rel_tol=1e-5)


def test_five_alternates_per_row_by_default():
    method = PluginHost().methods["altpo"]
    assert (method.alternate, method.alternates_per_row) == ("rewrite", 5)


def test_conforms(tmp_path):
    assert_conforms("altpo", tmp_path)


def test_forget_nll_rises_while_retain_nll_moves_less(tmp_path):
    nll_change("altpo", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.25)
