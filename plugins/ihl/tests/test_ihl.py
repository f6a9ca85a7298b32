"""IHL: the formula on hand-made logits, its bounds, conformance, forgetting."""

from __future__ import annotations

import math

import torch
from unlearn_plugin_ihl import IHLConfig, compute_loss, inverted_hinge

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, nll_change


def test_inverted_hinge_by_hand():
    # Position 0 predicts label 2 with probabilities (0.1, 0.2, 0.6, 0.1): 1 + 0.6 - 0.2 = 1.4.
    # Position 1 predicts label 0 with (0.25, 0.25, 0.25, 0.25): 1 + 0.25 - 0.25 = 1.0.
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.6, 0.1], [0.25, 0.25, 0.25, 0.25], [0.25] * 4]]))
    labels = torch.tensor([[-100, 2, 0]])
    assert math.isclose(float(inverted_hinge(logits, labels)), (1.4 + 1.0) / 2, rel_tol=1e-6)


def test_bounds():
    vocab = 5
    certain = torch.full((1, 2, vocab), -30.0)
    certain[0, 0, 3] = 30.0
    assert math.isclose(float(inverted_hinge(certain, torch.tensor([[-100, 3]]))), 2.0, rel_tol=1e-6)  # memorised
    assert math.isclose(float(inverted_hinge(certain, torch.tensor([[-100, 1]]))), 0.0, abs_tol=1e-6)  # replaced
    random = torch.randn(4, 6, vocab) * 10
    value = float(inverted_hinge(random, torch.randint(0, vocab, (4, 6))))
    assert 0.0 <= value <= 2.0


def test_loss_and_gradient_direction():
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.6, 0.1], [0.25] * 4]]))
    model = FixedLogits(logits, torch.zeros(1, 2, 4))
    batch = hand_batch([[-100, 2]], [[-100, 1]])
    out = compute_loss(method="ihl", config=IHLConfig(retain_nll_weight=0.5), ctx=LossContext(model, batch, 0))
    assert math.isclose(float(out.loss.detach()), 1.4 + 0.5 * math.log(4.0), rel_tol=1e-5)
    out.loss.backward()
    assert model.forget.grad[0, 0, 2] > 0  # the answer's logit goes down
    assert model.forget.grad[0, 0, 1] < 0  # its strongest competitor's goes up


def test_conforms(tmp_path):
    assert_conforms("ihl", tmp_path)


def test_forget_nll_rises_far_more_than_retain_nll(tmp_path):
    nll_change("ihl", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.1)
