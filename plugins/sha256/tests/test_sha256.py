"""SHA256: the multiplier and loss by hand, MLP-only training, conformance, forgetting."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from unlearn_plugin_sha256 import SHA256Config, compute_loss, multiplier

from unlearn import LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, label_logits, nll_change
from unlearn.engine import CachedReference


@pytest.mark.parametrize("drift, expected", [(0.0, 1.2), (0.5, 1.5), (1.0, 2.3), (-1.0, 1.2)])
def test_multiplier_by_hand(drift, expected):
    # 0.3 * 6**0 + 0.8 = 1.1 -> 1.2; 0.3 * sqrt(6) + 0.8 = 1.53 -> 1.5; 2.6 -> 2.3; 0.85 -> 1.2
    assert multiplier(drift) == expected


def test_loss_by_hand():
    batch = hand_batch([[-100, 1]], [[-100, 1]])
    model = FixedLogits(label_logits(0.25, positions=2), label_logits(0.25, positions=2))
    reference = CachedReference(lambda: FixedLogits(label_logits(0.25, positions=2), label_logits(0.5, positions=2)))
    out = compute_loss(method="sha256", config=SHA256Config(), ctx=LossContext(model, batch, 0, reference))
    drift = math.log(4) - math.log(2)  # the retain NLL rose from -log 1/2 to -log 1/4
    m = round(0.3 * 6**drift + 0.8, 1)
    assert out.logs["multiplier"] == m == 1.8
    assert math.isclose(float(out.loss.detach()), -math.log(4) + m * math.log(4), rel_tol=1e-5)


def test_conforms(tmp_path):
    assert_conforms("sha256", tmp_path)


def test_only_the_chosen_mlps_train_and_forgetting_happens(tmp_path, memorised_model):
    change = nll_change("sha256", tmp_path, trainer={"learning_rate": 1e-2, "max_steps": 6})
    change.assert_forgets(forget_factor=2.0, retain_share=0.25)
    before = load_file(memorised_model / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if ".mlp." in k}  # every MLP weight of layers 0-5, nothing else


def test_a_layer_choice_leaves_the_other_layers_bit_identical(tmp_path, memorised_model):
    nll_change("sha256", tmp_path, config={"layers": [1], "pattern": r"mlp\.down_proj"}, trainer={"max_steps": 1})
    before = load_file(memorised_model / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert {k for k in before if not torch.equal(before[k], after[k])} == {"model.layers.1.mlp.down_proj.weight"}
