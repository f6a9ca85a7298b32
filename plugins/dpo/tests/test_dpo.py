"""DPO / IdkDPO: the preference loss by hand, its gradient on both sides, the retain terms,
conformance, and forgetting on a tiny model."""

from __future__ import annotations

import math

from unlearn_plugin_dpo import DPOConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change
from unlearn.engine import CachedReference

BATCH = hand_batch([[-100, 1, 1]], [[-100, 1, 1]], [[-100, 1, 1]])  # two answer tokens per split


def _loss(config: DPOConfig) -> tuple[FixedLogits, object]:
    model = FixedLogits(label_logits(0.25), label_logits(0.25), alternate=label_logits(0.5))
    reference = CachedReference(lambda: FixedLogits(label_logits(0.5), label_logits(0.25), label_logits(0.25)))
    return model, compute_loss(method="dpo", config=config, ctx=LossContext(model, BATCH, 0, reference))


def test_dpo_by_hand_and_its_gradients():
    beta = 0.1
    model, out = _loss(DPOConfig(beta=beta, retain_nll_weight=0.0))
    win, lose = 2 * math.log(0.5 / 0.25), 2 * math.log(0.25 / 0.5)  # summed over the two tokens
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-beta * (win - lose))))
    assert math.isclose(float(out.loss.detach()), expected, rel_tol=1e-5)
    assert math.isclose(float(out.logs["win_log_ratio"].detach()), win, rel_tol=1e-5)
    out.loss.backward()
    assert model.forget.grad[0, 0, 1] > 0  # descending lowers the forget answer's logit
    assert model.alternate.grad[0, 0, 1] < 0  # and raises the alternate's


def test_retain_terms_add_with_their_weights():
    _, base = _loss(DPOConfig(retain_nll_weight=0.0))
    _, both = _loss(DPOConfig(retain_nll_weight=0.5, retain_kl_weight=2.0))
    retain_nll = math.log(4.0)
    assert math.isclose(float(both.logs["retain_nll"].detach()), retain_nll, rel_tol=1e-5)
    assert math.isclose(float(both.logs["retain_kl"].detach()), 0.0, abs_tol=1e-6)  # reference = model there
    assert math.isclose(float(both.loss.detach()), float(base.loss.detach()) + 0.5 * retain_nll, rel_tol=1e-5)


def test_conforms(tmp_path):
    assert_conforms("dpo", tmp_path)


def test_forget_nll_rises_while_retain_nll_moves_less(tmp_path):
    # A refusal in place of each tiny answer: forget NLL triples in 4 steps; retain NLL moves by
    # under 40% as much.
    nll_change("dpo", tmp_path).assert_forgets(forget_factor=2.0, retain_share=0.4)
