"""NPO: the formula on hand-made logits (both variants), boundedness, conformance, forgetting."""

from __future__ import annotations

import math

import pytest
import torch
from unlearn_plugin_npo import NPOConfig, compute_loss, npo_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change
from unlearn.engine import CachedReference


@pytest.mark.parametrize("variant", ["sequence", "batch_mean"])
def test_npo_by_hand(variant):
    beta = 0.1
    batch = hand_batch([[-100, 1, 1]], [[-100, 1, 1]])  # two answer tokens, both label 1
    model = FixedLogits(label_logits(0.25), label_logits(0.25))
    reference = CachedReference(lambda: FixedLogits(label_logits(0.5), label_logits(0.5)))
    config = NPOConfig(beta=beta, variant=variant, retain_nll_weight=0.0)
    out = compute_loss(method="npo", config=config, ctx=LossContext(model, batch, 0, reference))
    # log-ratio: summed over the two tokens (sequence) or the mean token (batch_mean)
    delta = 2 * math.log(0.25 / 0.5) if variant == "sequence" else math.log(0.25 / 0.5)
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(beta * delta)))  # -(2/b) logsigmoid(-b delta)
    assert math.isclose(float(out.loss.detach()), expected, rel_tol=1e-5)
    out.loss.backward()
    assert model.forget.grad[0, 0, 1] > 0  # descending lowers the forget label's logit


def test_npo_is_bounded_below_by_zero_where_ga_is_not():
    ref = torch.tensor([-1.0])
    at_reference = npo_loss(ref, ref, beta=0.1)
    assert math.isclose(float(at_reference), (2 / 0.1) * math.log(2), rel_tol=1e-6)
    far = npo_loss(torch.tensor([-1e4]), ref, beta=0.1)
    assert 0 <= float(far) < 1e-3  # forgetting completely costs nothing more: no collapse incentive


def test_retain_terms_add_with_their_weights():
    batch = hand_batch([[-100, 1, 1]], [[-100, 1, 1]])
    model = FixedLogits(label_logits(0.25), label_logits(0.25))
    reference = CachedReference(lambda: FixedLogits(label_logits(0.25), label_logits(0.5)))
    base = compute_loss(
        method="npo", config=NPOConfig(retain_nll_weight=0.0), ctx=LossContext(model, batch, 0, reference)
    )
    both = compute_loss(
        method="npo",
        config=NPOConfig(retain_nll_weight=0.2, retain_kl_weight=0.4),
        ctx=LossContext(model, batch, 0, reference),
    )
    retain_nll = math.log(4.0)
    assert math.isclose(float(both.logs["retain_nll"].detach()), retain_nll, rel_tol=1e-5)
    kl = float(both.logs["retain_kl"].detach())
    assert kl > 0
    assert math.isclose(
        float(both.loss.detach()), float(base.loss.detach()) + 0.2 * retain_nll + 0.4 * kl, rel_tol=1e-5
    )


def test_conforms(tmp_path):
    assert_conforms("npo", tmp_path)


def test_forget_nll_rises_far_more_than_retain_nll(tmp_path):
    nll_change("npo", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.1)
