"""Real DeepSpeed on CPU: ZeRO-2 and ZeRO-3 in one process, and two ranks under torchrun.

Each case runs the installed CLI in a subprocess, as a user or an organiser's cluster would.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch
from helpers import cli, launch, run_args
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.heavy


def _args(tiny_model, tiny_data, out, *extra):
    return run_args(
        tiny_model,
        tiny_data,
        out,
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--seed",
        "7",
        "--set",
        "trainer.progress=false",
        *extra,
    )


def _launch(tiny_model, tiny_data, out, *extra, nproc: int | None = None) -> subprocess.CompletedProcess:
    """``unlearn run`` (under torchrun with ``nproc`` ranks) outside any distributed environment of
    the test process; must succeed."""
    res = launch(*_args(tiny_model, tiny_data, out, *extra), nproc=nproc)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _single_process(tiny_model, tiny_data, out, *extra) -> None:
    """One DeepSpeed process, launched without torchrun (the CLI sets the distributed variables)."""
    _launch(tiny_model, tiny_data, out, *extra)


def _plain(tiny_model, tiny_data, tmp_path):
    res = cli(*_args(tiny_model, tiny_data, tmp_path / "plain"))
    assert res.returncode == 0, res.stderr[-3000:]
    return load_file(tmp_path / "plain" / "model.safetensors")


def _close_to(weights, folder):
    AutoModelForCausalLM.from_pretrained(folder)  # loads with the Auto classes
    other = load_file(folder / "model.safetensors")
    assert set(other) == set(weights)
    worst = max(float((weights[k] - other[k]).abs().max()) for k in weights)
    assert worst < 1e-5, f"DeepSpeed changed the result by {worst}"


def test_zero2_single_process_matches_the_plain_run(tiny_model, tiny_data, tmp_path):
    _single_process(tiny_model, tiny_data, tmp_path / "z2", "--deepspeed", "zero2")
    _close_to(_plain(tiny_model, tiny_data, tmp_path), tmp_path / "z2")


def test_zero3_from_a_json_file_saves_a_loadable_safetensors_model(tiny_model, tiny_data, tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"}))
    _single_process(tiny_model, tiny_data, tmp_path / "z3", "--deepspeed", str(ds))
    assert not list((tmp_path / "z3").glob("*.bin")) and not list((tmp_path / "z3").glob("global_step*"))
    _close_to(_plain(tiny_model, tiny_data, tmp_path), tmp_path / "z3")


# NPO with the retain term replaced by KL to the reference: at the first step the model is the
# reference, so the loss is exactly (2 / beta) log 2 + 0. A reference that ZeRO-3 left as empty
# shards used to crash here ("Padding_idx must be within num_embeddings"); a wrong one would
# give another number.
_NPO_KL = (
    "--method",
    "npo",
    "--set",
    "config.npo.retain_nll_weight=0",
    "--set",
    "config.npo.retain_kl_weight=1",
    "--max-steps",
    "1",
)


@pytest.mark.parametrize("extra", [("--deepspeed", "zero3", *_NPO_KL), ()], ids=["zero3-npo-kl", "ddp"])
def test_two_ranks_under_torchrun(tiny_model, tiny_data, tmp_path, extra):
    out = tmp_path / "ddp"
    res = _launch(tiny_model, tiny_data, out, *extra, nproc=2)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    report = json.loads((out / "unlearn_run.json").read_text())
    assert report["train"]["train_loss"] is not None
    assert report["world_size"] == 2
    assert not (tmp_path / ".ddp.partial").exists()
    assert res.stdout.count("unlearned model written") == 1  # reported once, by rank 0
    if "npo" in extra:
        assert report["train"]["train_loss"] == pytest.approx(20 * math.log(2), rel=1e-5)


def test_zero3_reference_hidden_states_for_rmu(tiny_model, tiny_data, tmp_path):
    """RMU reads the reference's hidden states through a hook that stops the forward pass early."""
    _single_process(tiny_model, tiny_data, tmp_path / "rmu", "--deepspeed", "zero3", "--method", "rmu")
    assert all(torch.isfinite(p).all() for p in AutoModelForCausalLM.from_pretrained(tmp_path / "rmu").parameters())
