"""LoRA: only adapter weights train, the merged model reloads and equals base + B A, the
reference is the same network with the adapter off (no second copy), conformance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from unlearn_plugin_lora import LoRAConfig, select_parameters

from unlearn import LossContext
from unlearn.devkit import assert_conforms
from unlearn.engine import CachedReference, PluginHost, RunConfig, run


@pytest.fixture(scope="module")
def setup(memorised_model: Path, tiny_data: Path) -> tuple[Path, Path]:
    return memorised_model, tiny_data


def _run(model: Path, data: Path, out: Path, lora: dict, method: str = "npo") -> Path:
    config = RunConfig.model_validate(
        {
            "model": str(model),
            "data": str(data),
            "method": method,
            "with": ["lora"],
            "output_dir": str(out),
            "seed": 3,
            "config": {"lora": lora, "npo": {"retain_kl_weight": 1.0}},
            "trainer": {"max_steps": 4, "batch_size": 2, "learning_rate": 1e-2, "progress": False},
        }
    )
    return run(config, host=PluginHost())


def test_only_adapters_train_and_merged_model_is_base_plus_low_rank(setup, tmp_path):
    model_dir, data = setup
    before = load_file(model_dir / "model.safetensors")
    lora = {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "down_proj"]}
    adapter_dir = _run(model_dir, data, tmp_path / "adapter", {**lora, "save": "adapter"})
    merged_dir = _run(model_dir, data, tmp_path / "merged", lora)

    adapter = load_file(adapter_dir / "adapter_model.safetensors")
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter), sorted(adapter)
    assert not (adapter_dir / "model.safetensors").exists()
    assert load_file(model_dir / "model.safetensors").keys() == before.keys()  # input untouched
    assert all(torch.equal(before[k], v) for k, v in load_file(model_dir / "model.safetensors").items())

    merged = AutoModelForCausalLM.from_pretrained(merged_dir).state_dict()  # reloads with the Auto classes
    assert not (merged_dir / "adapter_config.json").exists()
    changed = []
    for name, weight in before.items():
        if name.endswith(("q_proj.weight", "down_proj.weight")):
            stem = name.removesuffix(".weight")
            a = next(v for k, v in adapter.items() if k.endswith(f"{stem}.lora_A.weight"))
            b = next(v for k, v in adapter.items() if k.endswith(f"{stem}.lora_B.weight"))
            delta = merged[name] - weight
            # The same seed gives the same adapter in both runs: merged = W + (alpha / r) * B A.
            torch.testing.assert_close(delta, (8 / 4) * b @ a, atol=1e-5, rtol=1e-4)
            assert torch.linalg.matrix_rank(delta) <= 4
            changed.append(name)
        else:
            assert torch.equal(merged[name], weight), f"{name} changed but has no adapter"
    assert changed and any(float((merged[n] - before[n]).abs().max()) > 0 for n in changed)


def test_select_parameters_leaves_only_adapters_trainable(setup):
    model = AutoModelForCausalLM.from_pretrained(setup[0])
    wrapped = select_parameters(method="lora", config=LoRAConfig(layers=[1]), model=model, run=None)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".layers.1." in n for n in trainable)
    assert not any("lm_head" in n for n, _ in wrapped.named_parameters() if "lora_" in n)


def test_reference_is_the_network_with_the_adapter_off(setup):
    model_dir = setup[0]

    def no_second_copy() -> torch.nn.Module:
        raise AssertionError("the reference must not load a second model")

    class Run:
        reference = CachedReference(no_second_copy)

    wrapped = select_parameters(
        method="lora", config=LoRAConfig(), model=AutoModelForCausalLM.from_pretrained(model_dir), run=Run
    )
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter
    wrapped.train()
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch = {"forget": {**inputs, "labels": ids, "index": torch.tensor([0]), "task": ["t"]}}
    ctx = LossContext(wrapped, batch, 0, Run.reference)
    base = AutoModelForCausalLM.from_pretrained(model_dir)(**inputs).logits
    torch.testing.assert_close(ctx.reference_logits("forget"), base)
    assert not torch.allclose(ctx.outputs("forget").logits, base, atol=1e-3)  # the adapter is on while training
    assert wrapped.training  # switched back after the reference pass


def test_conforms(tmp_path):
    assert_conforms("lora", tmp_path)
