"""The quantization attack: round-to-nearest on hand-worked groups, its error bound, and the
attack on a tiny model (every linear layer but the head rounded, the input model only read)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from unlearn_plugin_quantize import Quantize, QuantizeConfig, round_to_nearest

from unlearn import RunError


def test_four_bits_of_one_group_worked_by_hand():
    # qmax 7, scale 1/7: 0.6*7 = 4.2 -> 4, -7 -> -7, 1.75 -> 2, 0.7 -> 1
    got = round_to_nearest(torch.tensor([[0.6, -1.0, 0.25, 0.1]]), bits=4, group_size=4)
    assert torch.allclose(got, torch.tensor([[4 / 7, -1.0, 2 / 7, 1 / 7]]))


def test_each_group_has_its_own_scale_and_a_short_last_group():
    # groups of 2: [0.2, -0.1] scale 0.2, [3.0, 1.0] scale 3, [0.06] scale 0.06 (bits 2: qmax 1)
    got = round_to_nearest(torch.tensor([[0.2, -0.1, 3.0, 1.0, 0.06]]), bits=2, group_size=2)
    assert torch.allclose(got, torch.tensor([[0.2, -0.0, 3.0, 0.0, 0.06]]))
    assert torch.equal(round_to_nearest(torch.zeros(2, 3), 4, 2), torch.zeros(2, 3))


@pytest.mark.parametrize("bits", [8, 4, 3])
def test_the_error_is_at_most_half_a_step_of_its_group(bits):
    weight = torch.randn(16, 300, generator=torch.Generator().manual_seed(bits))
    got = round_to_nearest(weight, bits, 128)
    step = torch.nn.functional.pad(weight, (0, 84)).view(16, 3, 128).abs().amax(-1) / (2 ** (bits - 1) - 1)
    error = torch.nn.functional.pad(got - weight, (0, 84)).view(16, 3, 128).abs().amax(-1)
    assert (error <= step / 2 + 1e-6).all()
    assert len(torch.unique(got[0, :128])) <= 2**bits - 1


@dataclass
class _Ctx:
    seed: int
    device: str
    work: Path
    benchmark: object = None


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())).hexdigest()


def test_the_attack_rounds_every_linear_layer_but_the_head(tiny_model, tmp_path):
    before = _digest(tiny_model)
    ctx = _Ctx(0, "cpu", tmp_path / "work")
    variants = Quantize().run(tiny_model, tmp_path / "data", QuantizeConfig(bits=[8, 3], group_size=16), ctx)
    assert [v.label for v in variants] == ["int8", "int3"] and _digest(tiny_model) == before
    original = load_file(tiny_model / "model.safetensors")
    for variant, bits in zip(variants, (8, 3)):
        assert variant.model.parent == ctx.work and variant.data == tmp_path / "data"
        weights = load_file(variant.model / "model.safetensors")
        moved = {k for k in original if not torch.equal(original[k], weights[k])}
        linear = {k for k in original if k.endswith("proj.weight")}
        assert moved == linear, sorted(moved ^ linear)  # embeddings, norms and the head untouched
        q = weights["model.layers.0.mlp.down_proj.weight"]
        assert len(torch.unique(q[0, :16])) <= 2**bits - 1


def test_bad_settings_and_bitsandbytes_without_a_gpu_say_why(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="each from 2 to 8"):
        QuantizeConfig(bits=[1])
    with pytest.raises(ValidationError, match="surely_not"):
        QuantizeConfig(surely_not=1)
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(RunError, match="bitsandbytes"):
        Quantize().run(tiny_model, tmp_path, QuantizeConfig(method="bitsandbytes"), _Ctx(0, "cpu", tmp_path / "w"))


def test_conforms_to_unlearn(tmp_path):
    from unlearn.devkit import assert_conforms

    assert_conforms("quantize", tmp_path)
