"""GA: the formula on hand-made logits, conformance, and forgetting on a real tiny model."""

from __future__ import annotations

import math

import torch
from unlearn_plugin_ga import GAConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, nll_change


def test_loss_is_minus_the_mean_answer_token_nll():
    # Vocabulary of 4; uniform logits everywhere except one position that puts p=0.5 on the label.
    logits = torch.zeros(1, 4, 4)
    logits[0, 1] = torch.tensor([0.0, 0.0, math.log(3.0), 0.0])  # predicts token 2 with p = 3/6
    model = FixedLogits(logits)
    batch = hand_batch([[-100, -100, 2, 3]])  # answer tokens at positions 2 and 3
    out = compute_loss(method="ga", config=GAConfig(), ctx=LossContext(model, batch, 0))
    expected_nll = (math.log(2.0) + math.log(4.0)) / 2  # -log 0.5 and -log 0.25
    assert math.isclose(float(out.loss.detach()), -expected_nll, rel_tol=1e-6)
    assert math.isclose(float(out.logs["forget_nll"].detach()), expected_nll, rel_tol=1e-6)
    out.loss.backward()
    # Descending the GA loss lowers the label's logit: the gradient on it is positive.
    assert model.forget.grad[0, 1, 2] > 0 and model.forget.grad[0, 2, 3] > 0
    assert torch.all(model.forget.grad[0, 3] == 0)  # the last position predicts nothing
    assert torch.all(model.forget.grad[0, 0] == 0)  # prompt positions get no gradient


def test_conforms(tmp_path):
    assert_conforms("ga", tmp_path)


def test_one_step_raises_the_forget_nll(tmp_path):
    change = nll_change("ga", tmp_path, trainer={"max_steps": 1})
    assert change.forget_after > 1.05 * change.forget_before
