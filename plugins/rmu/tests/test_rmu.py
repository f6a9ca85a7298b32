"""RMU: the loss by hand, the layer choice, the adaptive coefficients, conformance, forgetting."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from unlearn_plugin_rmu import RMUConfig, _masked_mse, steering_layer, unit_vector

from unlearn import ConfigError, LossContext, layer_output
from unlearn.devkit import assert_conforms, build_tiny_model, nll_change
from unlearn.engine import CachedReference


def test_masked_mse_and_unit_vectors_by_hand():
    states = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])
    target = torch.zeros(1, 2, 2)
    assert float(_masked_mse(states, target, torch.tensor([[1.0, 0.0]]))) == 1.0  # only the first token counts
    assert float(_masked_mse(states, target, torch.tensor([[1.0, 1.0]]))) == 5.0  # (1 + 9) / 2
    u = unit_vector(8, 0, "Task1")
    assert torch.isclose(u.norm(), torch.tensor(1.0)) and torch.equal(u, unit_vector(8, 0, "Task1"))
    assert not torch.equal(u, unit_vector(8, 0, "Task2"))  # one direction per task in the adaptive variant


def test_steering_layer_follows_the_depth(tiny_rmu_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_rmu_model)
    assert steering_layer(RMUConfig(), model) == 3  # 13/16 of 4 layers
    assert steering_layer(RMUConfig(layer=1), model) == 1
    assert steering_layer(RMUConfig(layer=-1), model) == 3 and steering_layer(RMUConfig(layer=-4), model) == 0
    for bad in (4, -5):
        with pytest.raises(ConfigError, match=rf"config.rmu.layer = {bad}: the model has 4 decoder layers"):
            steering_layer(RMUConfig(layer=bad), model)


@pytest.fixture(scope="module")
def tiny_rmu_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("rmu") / "m", layers=4)


def test_loss_pulls_forget_states_towards_c_u_and_keeps_retain_states(tiny_rmu_model):
    from transformers import AutoTokenizer
    from unlearn_plugin_rmu import compute_loss

    from unlearn import PairCollator, PairedDataset, encode
    from unlearn.devkit import FORGET_ROWS, RETAIN_ROWS

    tok = AutoTokenizer.from_pretrained(tiny_rmu_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_rmu_model)
    reference = CachedReference(lambda: AutoModelForCausalLM.from_pretrained(tiny_rmu_model))
    data = PairedDataset(encode(FORGET_ROWS, tok, 64), encode(RETAIN_ROWS, tok, 64))
    batch = PairCollator(tok.pad_token_id)([data[i] for i in range(2)])
    config = RMUConfig(layer=1, steering_coeff=4.0, alpha=10.0)
    out = compute_loss(method="rmu", config=config, ctx=LossContext(model, batch, 0, reference))
    states = layer_output(model, {k: batch["forget"][k] for k in ("input_ids", "attention_mask")}, 1).detach()
    target = 4.0 * unit_vector(states.shape[-1], 0, "")
    mask = batch["forget"]["attention_mask"].float()
    expected = (((states - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert torch.isclose(out.logs["forget_mse"].detach(), expected, rtol=1e-5)
    assert float(out.logs["retain_mse"].detach()) == 0.0  # the model still is the frozen one
    assert torch.isclose(out.loss.detach(), expected, rtol=1e-5)


def test_conforms(tmp_path):
    assert_conforms("rmu", tmp_path)


@pytest.mark.parametrize(
    "config, steps, retain_share",
    [
        ({"alpha": 1000.0}, 30, 0.1),  # WMDP's fixed c = 20
        ({"adaptive": True, "adaptive_scale": 3.0, "alpha": 100.0}, 20, 0.25),  # per-task u and c
    ],
    ids=["wmdp", "adaptive"],
)
def test_forgets_and_trains_only_down_projections(tmp_path, memorised_model, config, steps, retain_share):
    config = {"layer": 1, "layers_below": 1, **config}
    change = nll_change("rmu", tmp_path, config=config, trainer={"learning_rate": 3e-2, "max_steps": steps})
    change.assert_forgets(forget_factor=2.0, retain_share=retain_share)
    before = load_file(memorised_model / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
