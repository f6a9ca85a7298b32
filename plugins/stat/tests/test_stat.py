"""STAT: random labels and alternation by hand, the loss, conformance, forgetting."""

from __future__ import annotations

import math
import random

import torch
from unlearn_plugin_stat import STATConfig, compute_loss, random_labels, stat_schedule

from unlearn import Encoded, LossContext
from unlearn.devkit import FixedLogits, assert_conforms, hand_batch, nll_change


def test_random_labels_keep_the_prompt_and_draw_answers_from_the_pool():
    example = Encoded([5, 6, 7, 8], [-100, -100, 7, 8])
    relabelled = random_labels(example, [40, 41], random.Random(0))
    assert relabelled.input_ids[:2] == [5, 6] and relabelled.labels[:2] == [-100, -100]
    assert set(relabelled.input_ids[2:]) <= {40, 41} and relabelled.labels[2:] == relabelled.input_ids[2:]
    assert random_labels(example, [40, 41], random.Random(0)) == relabelled  # seeded


def test_schedule_alternates_forget_and_retain_batches():
    forget = [Encoded([i, i], [-100, i]) for i in range(4)]
    retain = [Encoded([9, 30 + j], [-100, 30 + j]) for j in range(3)]
    items = stat_schedule(forget, retain, STATConfig(), seed=1, batch_size=2)
    kinds = ["f" if "forget" in it else "r" for it in items]
    assert kinds == ["f", "f", "r", "r", "f", "f", "r", "r"]
    assert sorted(it["forget"][0] for it in items if "forget" in it) == [0, 1, 2, 3]
    assert all(it["forget"][1].labels[1] in {30, 31, 32} for it in items if "forget" in it)  # drawn from retain answers
    assert [it["retain"][0] for it in items if "retain" in it] == [0, 1, 2, 0]  # cycling


def test_loss_is_nll_of_whichever_split_the_batch_holds():
    logits = torch.zeros(1, 2, 4)
    model = FixedLogits(logits, logits)
    batch = hand_batch([[-100, 1]], [[-100, 1]])
    config = STATConfig(retain_weight=2.0)
    forget = compute_loss(method="stat", config=config, ctx=LossContext(model, {"forget": batch["forget"]}, 0))
    retain = compute_loss(method="stat", config=config, ctx=LossContext(model, {"retain": batch["retain"]}, 0))
    assert math.isclose(float(forget.loss.detach()), math.log(4), rel_tol=1e-6)  # descended, towards random labels
    assert math.isclose(float(retain.loss.detach()), 2 * math.log(4), rel_tol=1e-6)


def test_conforms(tmp_path):
    assert_conforms("stat", tmp_path)


def test_true_forget_answers_are_overwritten_while_retain_holds(tmp_path):
    change = nll_change(
        "stat", tmp_path, trainer={"max_steps": -1, "epochs": 3, "batch_size": 3, "learning_rate": 3e-3}
    )
    change.assert_forgets(forget_factor=2.0, retain_share=0.25)
