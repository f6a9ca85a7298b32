"""Flood: the flooded forget term by hand on both sides of the level, its gradient, conformance,
and a run whose forget NLL stops at the level where gradient difference's keeps climbing."""

from __future__ import annotations

import math

import pytest
from unlearn_plugin_flood import FloodConfig, compute_loss

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change

BATCH = hand_batch([[-100, 1, 1]], [[-100, 1, 1]])
NLL = -math.log(0.25)  # the forget answer's mean token NLL at p = 0.25 (1.386)


def _loss(config: FloodConfig) -> tuple[FixedLogits, object]:
    model = FixedLogits(label_logits(0.25), label_logits(0.5))
    return model, compute_loss(method="flood", config=config, ctx=LossContext(model, BATCH, 0))


def test_below_the_level_it_ascends_like_gradient_ascent():
    model, out = _loss(FloodConfig(level=3.0, retain_weight=1.0))
    assert math.isclose(float(out.loss.detach()), (3.0 - NLL) + math.log(2), rel_tol=1e-5)
    assert float(out.logs["below_level"]) == 1.0
    out.loss.backward()
    # d(b - NLL)/dz_label = (1 - p) / 2 per answer position (2 tokens): GA's gradient exactly
    assert math.isclose(float(model.forget.grad[0, 0, 1]), 0.75 / 2, rel_tol=1e-5)


@pytest.mark.parametrize(("two_sided", "loss", "grad"), [(True, NLL - 1.0, -0.75 / 2), (False, 0.0, 0.0)])
def test_above_the_level_it_descends_or_stops(two_sided, loss, grad):
    model, out = _loss(FloodConfig(level=1.0, two_sided=two_sided, retain_weight=0.0))
    assert math.isclose(float(out.loss.detach()), loss, abs_tol=1e-6)
    assert float(out.logs["below_level"]) == 0.0
    out.loss.backward()
    assert math.isclose(float(model.forget.grad[0, 0, 1]), grad, abs_tol=1e-7)


def test_conforms(tmp_path):
    assert_conforms("flood", tmp_path)


def test_forget_nll_settles_at_the_level(tmp_path):
    """Long enough for gradient difference to run far past 2 nats; flood stops near it."""
    trainer = {"max_steps": 30}
    flood = nll_change("flood", tmp_path / "flood", trainer=trainer, config={"level": 2.0})
    gd = nll_change("gd", tmp_path / "gd", trainer=trainer)
    assert flood.forget_before < 0.5 and gd.forget_after > 4.0, (flood, gd)
    assert 1.5 < flood.forget_after < 2.7, flood
    assert abs(flood.retain_after - flood.retain_before) < abs(gd.retain_after - gd.retain_before), (flood, gd)
