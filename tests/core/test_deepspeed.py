"""Real DeepSpeed on CPU: ZeRO-2 and ZeRO-3 in one process, and two ranks under torchrun.

Each case runs the installed CLI in a subprocess, as a user or an organiser's cluster would.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import cli, launch, run_args, undistributed_env
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


def test_plain_ddp_on_two_ranks_under_torchrun(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "ddp"
    res = _launch(tiny_model, tiny_data, out, nproc=2)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    report = json.loads((out / "unlearn_run.json").read_text())
    assert report["train"]["train_loss"] is not None
    assert report["world_size"] == 2
    assert not (tmp_path / ".ddp.partial").exists()
    assert res.stdout.count("unlearned model written") == 1  # reported once, by rank 0


def test_per_term_backward_under_ddp_ends_where_the_joint_run_ends(tiny_model, tiny_data, tmp_path):
    """DDP averages the gradients at each backward pass: the first group's average, then that
    plus the second group's own, averaged again, is the average of the sums (DPO: three passes)."""
    for mode in ("joint", "per-term"):
        _launch(tiny_model, tiny_data, tmp_path / mode, "--set", f"trainer.backward={mode}", "--method", "dpo", nproc=2)
    joint = load_file(tmp_path / "joint" / "model.safetensors")
    assert any(not torch.equal(joint[k], w) for k, w in load_file(tiny_model / "model.safetensors").items())
    _close_to(joint, tmp_path / "per-term")


def test_every_loss_method_under_zero2_and_zero3_on_two_ranks(tiny_model, tiny_data, tmp_path):
    """Each installed loss method, and NPO+KL with LoRA, two steps under ZeRO-3 (and one method of
    each data path, `zero_matrix.ZERO2`, under ZeRO-2) on two gloo ranks (one launch,
    `zero_matrix.py`): each writes a loadable model. The ZeRO-3 reference gives the unsharded
    input model's label log-probs, no rank holds a whole copy of it, and once its log-probs are
    cached the network is garbage (DeepSpeed's module-level references to it used to keep it). The
    optimiser's fp32 master shards are the float32 model's shards, not a copy (DeepSpeed 0.19 made
    one), and GD trained so ends bit for bit where it ends with DeepSpeed's copy.

    NPO with the retain term replaced by KL to the reference, one step under ZeRO-3: the model is
    the reference then, so the loss is exactly (2 / beta) log 2 + 0. A reference that ZeRO-3 left
    as empty shards used to crash ("Padding_idx must be within num_embeddings"); a wrong one would
    give another number. With ``reference.kl = "cached"`` the sharded reference's distributions are
    read once per row and the network freed. RMU reads the reference's hidden states through a hook that stops the
    sharded forward pass early."""
    import runpy

    from unlearn.engine import PluginHost

    matrix = Path(__file__).with_name("zero_matrix.py")
    zero2 = runpy.run_path(str(matrix))["ZERO2"]  # the methods it runs under ZeRO-2 as well

    res = launch(str(tiny_model), str(tiny_data), str(tmp_path), nproc=2, script=matrix)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    losses = sorted(n for n, m in PluginHost().methods.items() if m.kind == "loss")  # the installed ones
    expected = {f"zero3-{n}" for n in [*losses, "npo+lora"]} | {f"zero2-{n}" for n in [*zero2, "npo+lora"]}
    expected |= {"zero3-zero-probe", "zero3-npo-kl-first-step", "zero3-gd-deepspeed-copy", "zero3-npo-kl-cached"}
    for rank in ranks:
        failed = [c for c in rank["cases"] if not c["ok"]]
        assert not failed, failed[0]["error"]
        assert {c["case"] for c in rank["cases"]} == expected
    first_step = next(c for c in ranks[0]["cases"] if c["case"] == "zero3-npo-kl-first-step")
    assert first_step["train_loss"] == pytest.approx(20 * math.log(2), rel=1e-5)
    cached = next(c for c in ranks[0]["cases"] if c["case"] == "zero3-npo-kl-cached")
    # the forget and retain splits read once (3 batches of 2 rows each), then no reference pass or network
    assert cached["reference"] == {"used": ["full", "logprobs"], "forward_passes": 6, "kept": False}
    for case in expected:
        model = AutoModelForCausalLM.from_pretrained(tmp_path / case)
        assert all(torch.isfinite(p).all() for p in model.parameters()), case
    ours, theirs = (load_file(tmp_path / c / "model.safetensors") for c in ("zero3-gd", "zero3-gd-deepspeed-copy"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)  # training on the shards changes no bit
    for rank in ranks:
        seen = rank["reference"]
        assert seen["answer_tokens"] > 0 and seen["max_logprob_difference"] < 1e-5
        assert seen["local_elements"] < 0.6 * seen["full_elements"]  # a shard, not a copy
        assert seen["freed"]  # nothing (DeepSpeed's module-level references included) keeps its shards
        assert seen["master_is_shard"]  # float32 training keeps no second fp32 copy of each shard


def test_zero3_checkpoints_hold_shards_only_and_a_killed_run_resumes_from_them(tiny_model, tiny_data, tmp_path):
    """Under ZeRO-3 a checkpoint is DeepSpeed's sharded state (what resuming and `best_by` read),
    with no model gathered on rank 0: gathered beside the optimiser state, it was the run's memory
    peak. A run killed after its first checkpoint resumes from it and ends where an uninterrupted
    run ends."""
    extra = ("--max-steps", "6", "--deepspeed", "zero3", "--set", "trainer.save_steps=1")
    _single_process(tiny_model, tiny_data, tmp_path / "whole", *extra)
    args = [sys.executable, "-m", "unlearn", *_args(tiny_model, tiny_data, tmp_path / "cut", *extra)]
    kept = _kill_after_first_checkpoint(args, tmp_path / ".cut.partial" / "checkpoints")
    assert list(kept.glob("global_step*")), "DeepSpeed's sharded state is in the checkpoint"
    assert not list(kept.glob("*.safetensors")), "no gathered model in a ZeRO-3 checkpoint"
    _resumes_to(args, tmp_path / "cut", load_file(tmp_path / "whole" / "model.safetensors"))


def test_a_zero3_checkpoint_resumes_with_the_optimiser_sub_groups_it_was_saved_with(tiny_model, tiny_data, tmp_path):
    """A checkpoint from before the presets sized ZeRO-3's optimiser sub-groups holds DeepSpeed's one
    1e9-element group, which DeepSpeed loads into that layout only ("loaded state dict contains a
    parameter group that doesn't match the size of optimizer's group"): the resumed run takes the
    checkpoint's size and ends where an uninterrupted run ends. A file that sets another size by then
    gets one line saying which size the checkpoint needs, and the run still resumes once it is fixed."""
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3, "sub_group_size": 1_000_000_000}}))
    extra = ("--max-steps", "6", "--deepspeed", str(config), "--set", "trainer.save_steps=1")
    _single_process(tiny_model, tiny_data, tmp_path / "whole", *extra)
    args = [sys.executable, "-m", "unlearn", *_args(tiny_model, tiny_data, tmp_path / "cut", *extra)]
    _kill_after_first_checkpoint(args, tmp_path / ".cut.partial" / "checkpoints")
    config.write_text(json.dumps({"zero_optimization": {"stage": 3, "sub_group_size": 1000}}))
    refused = subprocess.run(args, capture_output=True, text=True, env=undistributed_env(), timeout=600)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "now sets to 1000;" in last and "back to 1000000000" in last
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))  # the same run config, today's sizing
    _resumes_to(args, tmp_path / "cut", load_file(tmp_path / "whole" / "model.safetensors"))


def _kill_after_first_checkpoint(args: list[str], checkpoints: Path) -> Path:
    """Start ``args`` and SIGKILL it once its first checkpoint is complete; returns that checkpoint."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=undistributed_env())
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not list(checkpoints.glob("*/unlearn_complete")):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = sorted(checkpoints.glob("checkpoint-*"))
    assert kept and (kept[0] / "unlearn_complete").exists(), "killed before its first checkpoint"
    return kept[0]


def _resumes_to(args: list[str], out: Path, weights: dict[str, torch.Tensor]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, env=undistributed_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "unlearn_run.json").read_text())
    assert report["resumed_from"] and Path(report["resumed_from"]).name.startswith("checkpoint-")
    _close_to(weights, out)
