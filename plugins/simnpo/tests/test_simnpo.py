"""SimNPO: the formula on hand-made logits, no reference model, conformance, forgetting."""

from __future__ import annotations

import math

import torch
from unlearn_plugin_simnpo import SimNPOConfig, compute_loss, simnpo_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, nll_change


def test_simnpo_by_hand_without_a_reference():
    beta, gamma = 2.5, 0.5
    logits = torch.zeros(2, 3, 4)  # uniform over 4 tokens
    logits[1, 1] = torch.tensor([0.0, math.log(3.0), 0.0, 0.0])  # second answer: p(label 1) = 1/2 at one position
    batch = hand_batch([[-100, 1, 1], [-100, 1, 1]], [[-100, 1, 1], [-100, 1, 1]])
    model = FixedLogits(logits, torch.zeros(2, 3, 4))
    out = compute_loss(
        method="simnpo",
        config=SimNPOConfig(beta=beta, gamma=gamma, retain_nll_weight=0.5),
        ctx=LossContext(model, batch, 0, reference=None),
    )  # a reference would raise if asked for
    nll_a = math.log(4.0)
    nll_b = (math.log(4.0) + math.log(2.0)) / 2
    term = lambda nll: -(2 / beta) * math.log(1 / (1 + math.exp(-(beta * nll - gamma))))  # noqa: E731
    expected = (term(nll_a) + term(nll_b)) / 2 + 0.5 * math.log(4.0)
    assert math.isclose(float(out.loss.detach()), expected, rel_tol=1e-5)
    out.loss.backward()
    assert model.forget.grad[0, 0, 1] > 0  # pushes the forget label's logit down


def test_simnpo_is_bounded_and_vanishes_as_the_answer_is_forgotten():
    assert float(simnpo_loss(torch.tensor([1e3]), 2.5, 0.0)) < 1e-6
    assert math.isclose(float(simnpo_loss(torch.tensor([0.0]), 2.5, 0.0)), (2 / 2.5) * math.log(2), rel_tol=1e-6)


def test_conforms(tmp_path):
    assert_conforms("simnpo", tmp_path)


def test_forget_nll_rises_far_more_than_retain_nll(tmp_path):
    nll_change("simnpo", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.1)
