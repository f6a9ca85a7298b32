"""KL: the formula on hand-made logits, conformance, and forgetting with the retain set held."""

from __future__ import annotations

import math

import torch
from unlearn_plugin_kl import KLConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, nll_change
from unlearn.engine import CachedReference


def test_loss_is_minus_forget_nll_plus_the_retain_kl():
    vocab = 2
    forget = torch.zeros(1, 2, vocab)  # uniform: NLL = log 2
    theta_retain = torch.zeros(1, 2, vocab)
    theta_retain[0, 0] = torch.tensor([0.0, math.log(3.0)])  # q = (1/4, 3/4) at the answer position
    ref_retain = torch.zeros(1, 2, vocab)  # p = (1/2, 1/2)
    batch = hand_batch([[-100, 1]], [[-100, 0]])
    model = FixedLogits(forget, theta_retain)
    reference = CachedReference(lambda: FixedLogits(forget, ref_retain))
    out = compute_loss(method="kl", config=KLConfig(kl_weight=2.0), ctx=LossContext(model, batch, 0, reference))
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert math.isclose(float(out.logs["retain_kl"].detach()), kl, rel_tol=1e-5)
    assert math.isclose(float(out.loss.detach()), -math.log(2.0) + 2.0 * kl, rel_tol=1e-5)
    out.loss.backward()
    assert model.retain.grad[0, 0, 1] > 0  # pulls q(1) = 3/4 back down towards p(1) = 1/2
    same = compute_loss(
        method="kl", config=KLConfig(), ctx=LossContext(FixedLogits(forget, ref_retain), batch, 0, reference)
    )
    assert float(same.logs["retain_kl"].detach()) == 0.0  # no divergence from itself


def test_conforms(tmp_path):
    assert_conforms("kl", tmp_path)


def test_forget_nll_rises_far_more_than_retain_nll(tmp_path):
    nll_change("kl", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.1)
