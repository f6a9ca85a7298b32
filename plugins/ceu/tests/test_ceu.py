"""CE-U: the loss by hand, the skipped first answer token, the bounded gradient, conformance, forgetting."""

from __future__ import annotations

import math

import torch
from unlearn_plugin_ceu import CEUConfig, ceu_loss, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change


def test_ceu_by_hand_and_its_gradient():
    # three answer tokens, the first skipped; uniform logits: the target is 1/3 on each other token
    model = FixedLogits(label_logits(0.25, positions=4))
    batch = hand_batch([[-100, 1, 1, 1]])
    out = compute_loss(method="ceu", config=CEUConfig(), ctx=LossContext(model, batch, 0))
    assert math.isclose(float(out.detach()), math.log(4), rel_tol=1e-5)
    out.backward()
    # softmax - target at the label: (0.25 - 0) / 2 positions
    assert math.isclose(float(model.forget.grad[0, 1, 1]), 0.25 / 2, rel_tol=1e-5)
    assert float(model.forget.grad[0, 0].abs().sum()) == 0  # the first answer token is not unlearned


def test_gradient_stays_bounded_where_gradient_ascent_explodes():
    logits = label_logits(1 - 1e-6, positions=3).requires_grad_(True)
    ceu_loss(logits, torch.tensor([[-100, 1, 1]]), skip=0).backward()
    assert float(logits.grad.abs().max()) <= 1.0  # |softmax - target| per position, averaged


def test_nothing_left_after_skipping_is_zero_not_nan():
    logits = label_logits(0.5, positions=2).requires_grad_(True)
    loss = ceu_loss(logits, torch.tensor([[-100, 1]]), skip=1)
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_conforms(tmp_path):
    assert_conforms("ceu", tmp_path)


def test_forget_nll_rises(tmp_path):
    # no retain term: the bound is looser than for the methods that keep the retain set
    nll_change("ceu", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.25)
