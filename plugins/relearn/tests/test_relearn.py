"""ReLearn: the augmented answers' NLL and the retain terms by hand, conformance, forgetting."""

from __future__ import annotations

import math

from unlearn_plugin_relearn import ReLearnConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change
from unlearn.engine import CachedReference

BATCH = hand_batch([[-100, 1, 1]], [[-100, 1, 1]], [[-100, 2, 2]])


def test_relearn_by_hand_and_its_gradient():
    model = FixedLogits(label_logits(0.5), label_logits(0.5), alternate=label_logits(0.25, label=2))
    reference = CachedReference(lambda: FixedLogits(label_logits(0.5), label_logits(0.8)))
    config = ReLearnConfig(retain_nll_weight=0.5)
    out = compute_loss(method="relearn", config=config, ctx=LossContext(model, BATCH, 0, reference))
    # KL(p_ref || p_theta) per position: 0.8 log(0.8/0.5) + 3 * (0.2/3) log((0.2/3)/(0.5/3))
    kl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert math.isclose(float(out.logs["retain_kl"].detach()), kl, rel_tol=1e-5)
    assert math.isclose(float(out.loss.detach()), -math.log(0.25) + kl + 0.5 * -math.log(0.5), rel_tol=1e-5)
    out.loss.backward()
    assert model.alternate.grad[0, 0, 2] < 0  # the augmented answer is learned
    assert model.retain.grad[0, 0, 1] < 0  # the retain answer is pulled towards the reference's 0.8


def test_conforms(tmp_path):
    assert_conforms("relearn", tmp_path)


def test_forget_nll_rises_while_retain_nll_moves_less(tmp_path):
    nll_change("relearn", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.15)
