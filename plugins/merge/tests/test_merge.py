"""Merging: TIES and task arithmetic of two tiny models equal a merge computed by hand; LoRA
adapters merge with peft; a merge inside a run and a bad merge config; conformance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from unlearn_plugin_merge import MergeConfig, merge_models

from unlearn import ConfigError
from unlearn.devkit import assert_conforms, write_tiny_data
from unlearn.engine import PluginHost, RunConfig, run

NORM = "model.layers.0.self_attn.q_proj.weight"
# Task vectors on the first 4 entries of one 32x32 weight (the rest are 0); every other tensor is unchanged.
TAU_A = [0.5, -0.2, 0.3, 0.1]
TAU_B = [-0.4, 0.6, 0.05, 0.2]
KEEP_3 = 3 / 1024  # TIES density that keeps the top 3 entries of a 32x32 weight


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge")
    base = tiny_model
    found = {"base": base}
    for name, tau in (("a", TAU_A), ("b", TAU_B)):
        model = AutoModelForCausalLM.from_pretrained(base)
        with torch.no_grad():
            model.state_dict()[NORM].view(-1)[: len(tau)] += torch.tensor(tau)
        model.save_pretrained(root / name)
        found[name] = root / name
    return found


def _norm_delta(models: dict[str, Path], out: Path) -> list[float]:
    base, merged = load_file(models["base"] / "model.safetensors"), load_file(out / "model.safetensors")
    for name, weight in base.items():
        if name != NORM:
            assert torch.equal(merged[name], weight), f"{name} moved"
    delta = merged[NORM] - base[NORM]
    delta = delta.view(-1)
    assert torch.all(delta[4:] == 0)
    return delta[:4].tolist()


def test_ties_matches_a_merge_by_hand(models, tmp_path):
    # density 3/1024 keeps the top 3 of each task vector by magnitude:
    #   a -> [0.5, -0.2, 0.3, 0]    b -> [-0.4, 0.6, 0, 0.2]
    # weights (1, 2): weighted b -> [-0.8, 1.2, 0, 0.4]; sum [-0.3, 1.0, 0.3, 0.4] elects signs - + + +;
    # the agreeing entries, averaged by their weights: [-0.8/2, 1.2/2, 0.3/1, 0.4/2]
    out = tmp_path / "ties"
    merge_models([models["a"], models["b"]], models["base"], out, MergeConfig(density=KEEP_3, weights=[1, 2]))
    assert _norm_delta(models, out) == pytest.approx([-0.4, 0.6, 0.3, 0.2], abs=1e-6)
    assert AutoModelForCausalLM.from_pretrained(out) is not None


def test_ties_with_equal_weights_by_hand(models, tmp_path):
    # weights (1, 1): sum of trimmed [0.1, 0.4, 0.3, 0.2] elects + everywhere: [0.5/1, 0.6/1, 0.3/1, 0.2/1]
    out = tmp_path / "ties"
    merge_models([models["a"], models["b"]], models["base"], out, MergeConfig(density=KEEP_3))
    assert _norm_delta(models, out) == pytest.approx([0.5, 0.6, 0.3, 0.2], abs=1e-6)


def test_task_arithmetic_by_hand(models, tmp_path):
    out = tmp_path / "ta"
    merge_models(
        [models["a"], models["b"]], models["base"], out, MergeConfig(merge_method="task_arithmetic", weights=[1.0, 0.5])
    )
    expected = [a + 0.5 * b for a, b in zip(TAU_A, TAU_B)]
    assert _norm_delta(models, out) == pytest.approx(expected, abs=1e-6)


def test_bad_configs_are_named(models, tmp_path):
    with pytest.raises(ConfigError, match="1 weight"):
        merge_models([models["a"], models["b"]], models["base"], tmp_path / "x", MergeConfig(weights=[1.0]))
    with pytest.raises(ConfigError, match="not a folder"):
        merge_models([tmp_path / "missing"], models["base"], tmp_path / "y", MergeConfig())


def _adapter(model: Path, folder: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    wrapped = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    wrapped.save_pretrained(folder)
    return folder


def _fold(model: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel

    return (
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), adapter).merge_and_unload().state_dict()
    )


def test_adapters_merge_with_peft(models, tmp_path):
    base = models["base"]
    a, b = _adapter(base, tmp_path / "ad_a", 0), _adapter(base, tmp_path / "ad_b", 1)
    w0 = AutoModelForCausalLM.from_pretrained(base).state_dict()
    fa, fb = _fold(base, a), _fold(base, b)
    # task arithmetic over adapters is exact: W0 + (Wa - W0) + (Wb - W0)
    merge_models([a, b], base, tmp_path / "ta", MergeConfig(merge_method="task_arithmetic"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "ta").state_dict()
    for name in w0:
        torch.testing.assert_close(merged[name], fa[name] + fb[name] - w0[name], atol=1e-5, rtol=1e-5)
    # TIES of one adapter at density 1 is that adapter
    merge_models([a], base, tmp_path / "one", MergeConfig(density=1.0))
    one = AutoModelForCausalLM.from_pretrained(tmp_path / "one").state_dict()
    for name in w0:
        torch.testing.assert_close(one[name], fa[name], atol=1e-5, rtol=1e-5)
    # ZJUKLAB's merge: TIES of two adapters, density 0.8; the adapted weights move, the others do not
    merge_models([a, b], base, tmp_path / "ties", MergeConfig())
    ties = AutoModelForCausalLM.from_pretrained(tmp_path / "ties").state_dict()
    moved = {n for n in w0 if not torch.equal(ties[n], w0[n])}
    assert moved and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in moved)


def test_merge_inside_a_run_with_another_model(models, tmp_path):
    data = write_tiny_data(tmp_path / "data")
    config = RunConfig.model_validate(
        {
            "model": str(models["base"]),
            "data": str(data),
            "method": "gd",
            "with": ["merge"],
            "output_dir": str(tmp_path / "out"),
            "config": {"merge": {"merge_method": "task_arithmetic", "models": [str(models["a"])]}},
            "trainer": {"max_steps": 1, "batch_size": 2, "learning_rate": 1e-3, "progress": False},
        }
    )
    out = run(config, host=PluginHost())
    merged = load_file(out / "model.safetensors")
    assert (out / "tokenizer.json").is_file() and (out / "unlearn_run.json").is_file()
    base = load_file(models["base"] / "model.safetensors")
    # the trained model's task vector plus a's: the weight holds a's delta on top of training's
    assert not torch.equal(merged[NORM], base[NORM])
    AutoModelForCausalLM.from_pretrained(out)


def test_conforms(tmp_path):
    assert_conforms("merge", tmp_path)
