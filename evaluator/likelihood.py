"""Per-row answer negative log-likelihoods, batched: the quickest check that a forget set was
forgotten (the method plugins' tests use it)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from unlearn import Encoded, PairCollator, Row, encode, nll_from_logprobs, token_logprobs
from unlearn.engine import eval_mode, pad_token_id

from .ranks import SINGLE, Ranks


def _batched_logprobs(
    model: torch.nn.Module, pad_id: int, encoded: Sequence[Encoded], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``token_logprobs`` of each right-padded batch of ``batch_size`` rows, in order, in eval mode
    and without gradients (the model's mode is restored afterwards)."""
    device = next(model.parameters()).device
    collate = PairCollator(pad_id)
    with eval_mode(model):
        for start in range(0, len(encoded), batch_size):
            batch = collate.pad(list(enumerate(encoded[start : start + batch_size])))
            inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
            yield token_logprobs(model(**inputs).logits, batch["labels"].to(device))


def answer_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Row],
    max_length: int = 512,
    batch_size: int = 8,
    ranks: Ranks = SINGLE,
) -> list[tuple[float, int]]:
    """``(summed NLL, answer tokens)`` of each row's ``output`` given its ``input``, EOS included
    (TOFU's ``gt_loss`` and ``num_token_gt``; their ratio is its ``avg_gt_loss``). Rows are padded
    on the right in batches of ``batch_size``; under several ``ranks`` each computes its share of
    the batches (the same batches as one process) and every rank gets every row."""
    encoded = encode(rows, tokenizer, max_length)
    pad = pad_token_id(tokenizer)

    def batch(start: int) -> dict[int, list[tuple[float, int]]]:
        logp, mask = next(_batched_logprobs(model, pad, encoded[start : start + batch_size], batch_size))
        return {start: [(float(s), int(c)) for s, c in zip(-(logp * mask).sum(-1), mask.sum(-1))]}

    done = ranks.share(range(0, len(encoded), batch_size), batch)
    return [value for start in sorted(done) for value in done[start]]


def answer_nll(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[Row],
    max_length: int = 512,
    batch_size: int = 8,
    append_eos: bool = True,
) -> list[float]:
    """Mean NLL of each row's ``output`` given its ``input`` (EOS included, as in training, unless
    ``append_eos`` is False: a generation cut at its token limit has no EOS to score)."""
    encoded = encode(rows, tokenizer, max_length, append_eos)
    return [
        value
        for logp, mask in _batched_logprobs(model, pad_token_id(tokenizer), encoded, batch_size)
        for value in nll_from_logprobs(logp, mask, per_sequence=True).tolist()
    ]
