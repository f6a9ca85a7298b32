"""GD: the formula on hand-made logits, conformance, and forgetting without losing the retain set."""

from __future__ import annotations

import math

import pytest
import torch
from unlearn_plugin_gd import GDConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, nll_change


@pytest.mark.parametrize("retain_weight", [1.0, 2.5])
def test_loss_is_minus_forget_nll_plus_weighted_retain_nll(retain_weight):
    vocab = 4
    forget_logits = torch.zeros(1, 3, vocab)  # uniform: NLL = log 4 per token
    retain_logits = torch.zeros(1, 3, vocab)
    retain_logits[0, 1, 3] = math.log(3.0)  # p(token 3) = 1/2 at the one answer position
    batch = hand_batch([[-100, 1, 2]], [[-100, -100, 3]])
    model = FixedLogits(forget_logits, retain_logits)
    out = compute_loss(method="gd", config=GDConfig(retain_weight=retain_weight), ctx=LossContext(model, batch, 0))
    assert math.isclose(float(out.loss.detach()), -math.log(4.0) + retain_weight * math.log(2.0), rel_tol=1e-6)
    out.loss.backward()
    assert model.forget.grad[0, 0, 1] > 0  # ascent: the forget label's logit is pushed down
    assert model.retain.grad[0, 1, 3] < 0  # descent: the retain label's logit is pushed up


def test_config_rejects_a_negative_weight():
    with pytest.raises(ValueError):
        GDConfig(retain_weight=-1)


def test_conforms(tmp_path):
    assert_conforms("gd", tmp_path)


def test_forget_nll_rises_while_retain_nll_falls(tmp_path):
    # Memorise the retain rows only partly, so descent on them has room to lower their NLL.
    change = nll_change("gd", tmp_path, memorise_steps=60)
    assert change.forget_after > change.forget_before * 1.05
    assert change.retain_after < change.retain_before
