"""SUGD: the published schedule by hand, the per-sample loss, conformance, forgetting."""

from __future__ import annotations

import math

import torch
from unlearn_plugin_sugd import SUGDConfig, compute_loss, sugd_schedule

from unlearn import Encoded, LossContext, ScheduledDataset
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, nll_change


def _examples(n: int) -> list[Encoded]:
    return [Encoded([i, i], [-100, i]) for i in range(n)]


def _order(items) -> list[str]:
    return [f"{'f' if 'forget' in it else 'r'}{next(iter(it.values()))[0]}" for it in items]


def test_schedule_chunks_epochs_and_cyclic_retain_by_hand():
    config = SUGDConfig(chunk_size=2, epochs_per_chunk=2, retain_per_forget=2)
    items = sugd_schedule(_examples(5), _examples(3), config, batch_size=1)
    assert _order(items)[:12] == [
        "f0",
        "r0",
        "r1",
        "f1",
        "r2",
        "r0",  # chunk 1, epoch 1
        "f0",
        "r1",
        "r2",
        "f1",
        "r0",
        "r1",
    ]  # chunk 1, epoch 2
    assert _order(items)[12] == "f2"  # then the next chunk, in order
    assert len(items) == 5 * 2 * (1 + 2)


def test_batches_keep_forget_and_retain_apart():
    items = sugd_schedule(
        _examples(5), _examples(3), SUGDConfig(chunk_size=4, epochs_per_chunk=1, retain_per_forget=1), batch_size=2
    )
    assert _order(items)[:8] == ["f0", "f1", "r0", "r1", "f2", "f3", "r2", "r0"]
    assert _order(items)[8:12] == ["f4", "f4", "r1", "r2"]  # the one-example last chunk fills its batch
    ScheduledDataset(items, batch_size=2, method="sugd")  # every batch holds one split


def test_per_sample_loss():
    logits = torch.zeros(1, 2, 4)  # uniform: NLL = log 4
    model = FixedLogits(logits, logits)
    forget = compute_loss(
        method="sugd", config=SUGDConfig(), ctx=LossContext(model, {"forget": hand_batch([[-100, 1]])["forget"]}, 0)
    )
    retain = compute_loss(
        method="sugd",
        config=SUGDConfig(),
        ctx=LossContext(model, {"retain": hand_batch([[-100, 1]], [[-100, 1]])["retain"]}, 0),
    )
    assert math.isclose(float(forget.loss.detach()), -math.log(4), rel_tol=1e-6)
    assert math.isclose(float(retain.loss.detach()), 0.5 * math.log(4), rel_tol=1e-6)


def test_conforms(tmp_path):
    assert_conforms("sugd", tmp_path)


def test_forget_nll_rises_far_more_than_retain_nll(tmp_path):
    change = nll_change(
        "sugd",
        tmp_path,
        trainer={"max_steps": -1, "epochs": 1, "batch_size": 3},
        config={"chunk_size": 3, "epochs_per_chunk": 2, "retain_per_forget": 1},
    )
    change.assert_forgets(forget_factor=2.0, retain_share=0.1)
