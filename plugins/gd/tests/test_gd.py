"""GD: the formula on hand-made logits, conformance, and forgetting without losing the retain set."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import LossContext
from unlearn.config import RunConfig
from unlearn.evaluator import answer_nll
from unlearn.plugins import PluginHost
from unlearn.run import run
from unlearn.testing import FORGET_ROWS, RETAIN_ROWS, assert_conforms, build_tiny_model, write_tiny_data
from unlearn_plugin_gd import GDConfig, compute_loss


class FixedLogits(torch.nn.Module):
    """Returns the forget or the retain logits, both trainable, so the loss is checked by hand."""

    def __init__(self, forget: torch.Tensor, retain: torch.Tensor) -> None:
        super().__init__()
        self.forget = torch.nn.Parameter(forget)
        self.retain = torch.nn.Parameter(retain)

    def forward(self, input_ids, attention_mask):
        logits = self.forget if int(input_ids[0, 0]) == 0 else self.retain
        return type("Out", (), {"logits": logits})()


def _split(first: int, labels: list[int]) -> dict:
    ids = torch.tensor([[first] + [max(t, 0) for t in labels[1:]]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([labels]), "index": torch.tensor([0])}


@pytest.mark.parametrize("retain_weight", [1.0, 2.5])
def test_loss_is_minus_forget_nll_plus_weighted_retain_nll(retain_weight):
    vocab = 4
    forget_logits = torch.zeros(1, 3, vocab)  # uniform: NLL = log 4 per token
    retain_logits = torch.zeros(1, 3, vocab)
    retain_logits[0, 1, 3] = math.log(3.0)  # p(token 3) = 1/2 at the one answer position
    batch = {"forget": _split(0, [-100, 1, 2]), "retain": _split(1, [-100, -100, 3])}
    model = FixedLogits(forget_logits, retain_logits)
    out = compute_loss(method="gd", config=GDConfig(retain_weight=retain_weight), ctx=LossContext(model, batch, 0))
    assert math.isclose(float(out.loss.detach()), -math.log(4.0) + retain_weight * math.log(2.0), rel_tol=1e-6)
    out.loss.backward()
    assert model.forget.grad[0, 0, 1] > 0  # ascent: the forget label's logit is pushed down
    assert model.retain.grad[0, 1, 3] < 0  # descent: the retain label's logit is pushed up


def test_config_rejects_a_negative_weight():
    with pytest.raises(ValueError):
        GDConfig(retain_weight=-1)


def test_conforms(tmp_path):
    assert_conforms("gd", tmp_path)


def test_forget_nll_rises_while_retain_nll_falls(tmp_path):
    # Memorise the retain rows only partly, so descent on them has room to lower their NLL.
    model_dir = build_tiny_model(tmp_path / "model", memorise=FORGET_ROWS + RETAIN_ROWS, steps=60)
    data = write_tiny_data(tmp_path / "data")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def nll(folder):
        model = AutoModelForCausalLM.from_pretrained(folder)
        f, r = answer_nll(model, tokenizer, FORGET_ROWS), answer_nll(model, tokenizer, RETAIN_ROWS)
        return sum(f) / len(f), sum(r) / len(r)

    forget_before, retain_before = nll(model_dir)
    config = RunConfig.model_validate(
        {
            "model": str(model_dir), "data": str(data), "method": "gd", "output_dir": str(tmp_path / "out"),
            "trainer": {"max_steps": 4, "batch_size": 6, "learning_rate": 1e-3, "progress": False},
        }
    )
    forget_after, retain_after = nll(run(config, host=PluginHost()))
    assert forget_after > forget_before * 1.05
    assert retain_after < retain_before
