"""GA: the formula on hand-made logits, conformance, and forgetting on a real tiny model."""

from __future__ import annotations

import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import LossContext
from unlearn.config import RunConfig
from unlearn.evaluator import answer_nll
from unlearn.plugins import PluginHost
from unlearn.run import run
from unlearn.testing import FORGET_ROWS, RETAIN_ROWS, assert_conforms, build_tiny_model, write_tiny_data
from unlearn_plugin_ga import GAConfig, compute_loss


class FixedLogits(torch.nn.Module):
    """A 'model' whose output is a trainable logits tensor, so the loss can be checked by hand."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.logits})()


def _batch(labels: list[list[int]]) -> dict:
    labels_t = torch.tensor(labels)
    return {"input_ids": labels_t.clamp(min=0), "attention_mask": torch.ones_like(labels_t), "labels": labels_t, "index": torch.arange(len(labels))}


def test_loss_is_minus_the_mean_answer_token_nll():
    # Vocabulary of 4; uniform logits everywhere except one position that puts p=0.5 on the label.
    logits = torch.zeros(1, 4, 4)
    logits[0, 1] = torch.tensor([0.0, 0.0, math.log(3.0), 0.0])  # predicts token 2 with p = 3/6
    batch = {"forget": _batch([[-100, -100, 2, 3]])}  # answer tokens at positions 2 and 3
    model = FixedLogits(logits)
    out = compute_loss(method="ga", config=GAConfig(), ctx=LossContext(model, batch, 0))
    expected_nll = (math.log(2.0) + math.log(4.0)) / 2  # -log 0.5 and -log 0.25
    assert math.isclose(float(out.loss.detach()), -expected_nll, rel_tol=1e-6)
    assert math.isclose(float(out.logs["forget_nll"].detach()), expected_nll, rel_tol=1e-6)
    out.loss.backward()
    # Descending the GA loss lowers the label's logit: the gradient on it is positive.
    assert model.logits.grad[0, 1, 2] > 0 and model.logits.grad[0, 2, 3] > 0
    assert torch.all(model.logits.grad[0, 3] == 0)  # the last position predicts nothing
    assert torch.all(model.logits.grad[0, 0] == 0)  # prompt positions get no gradient


def test_conforms(tmp_path):
    assert_conforms("ga", tmp_path)


def test_one_step_raises_the_forget_nll(tmp_path):
    model_dir = build_tiny_model(tmp_path / "model", memorise=FORGET_ROWS + RETAIN_ROWS)
    data = write_tiny_data(tmp_path / "data")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    before = answer_nll(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer, FORGET_ROWS)
    config = RunConfig.model_validate(
        {
            "model": str(model_dir), "data": str(data), "method": "ga", "output_dir": str(tmp_path / "out"),
            "trainer": {"max_steps": 1, "batch_size": 6, "learning_rate": 1e-3, "progress": False},
        }
    )
    out = run(config, host=PluginHost())
    after = answer_nll(AutoModelForCausalLM.from_pretrained(out), tokenizer, FORGET_ROWS)
    assert all(a > b for a, b in zip(after, before))
    assert sum(after) > 1.05 * sum(before)
