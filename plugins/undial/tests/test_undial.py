"""UNDIAL: the adjusted-logit target by hand, its fixed point, the gradient, conformance, forgetting."""

from __future__ import annotations

import math

import torch
from unlearn_plugin_undial import UndialConfig, compute_loss, undial_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change
from unlearn.engine import CachedReference

BATCH = hand_batch([[-100, 1, 1]], [[-100, 1, 1]])


def test_undial_by_hand_and_its_gradient():
    # reference: p(label) 0.7, the other three 0.1; lowering the label's logit by log 7 makes the
    # target uniform, so the loss is the cross-entropy of the model against 1/4 each.
    model = FixedLogits(label_logits(0.7), label_logits(0.7))
    reference = CachedReference(lambda: FixedLogits(label_logits(0.7), label_logits(0.7)))
    config = UndialConfig(beta=math.log(7))
    out = compute_loss(method="undial", config=config, ctx=LossContext(model, BATCH, 0, reference))
    expected = -(0.25 * math.log(0.7) + 0.75 * math.log(0.1))
    assert math.isclose(float(out.loss.detach()), expected, rel_tol=1e-5)
    out.loss.backward()
    assert model.forget.grad[0, 0, 1] > 0  # towards the target: the label's logit goes down


def test_the_target_is_a_fixed_point():
    ref = label_logits(0.7)
    labels = torch.tensor([[-100, 1, 1]])
    at_target = label_logits(0.25)  # uniform: the adjusted target for beta = log 7
    assert math.isclose(float(undial_loss(at_target, ref, labels, math.log(7))), math.log(4), rel_tol=1e-5)
    logits = at_target.clone().requires_grad_(True)
    undial_loss(logits, ref, labels, math.log(7)).backward()
    assert float(logits.grad.abs().max()) < 1e-6  # no pull beyond the target: it cannot collapse


def test_conforms(tmp_path):
    assert_conforms("undial", tmp_path)


def test_forget_nll_rises_while_retain_nll_moves_less(tmp_path):
    nll_change("undial", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.25)
