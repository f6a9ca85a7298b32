"""Per-row answer negative log-likelihoods, batched: the quickest check that a forget set was
forgotten (the method plugins' tests use it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unlearn import Encoded, PairCollator, Row, encode, nll_from_logprobs, pad_token_id, token_logprobs


@torch.no_grad()
def _nll(model: torch.nn.Module, pad_id: int, encoded: Sequence[Encoded], batch_size: int) -> list[float]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = PairCollator(pad_id)
    values: list[float] = []
    try:
        for start in range(0, len(encoded), batch_size):
            batch = collate.pad(list(enumerate(encoded[start : start + batch_size])))
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
            logp, mask = token_logprobs(logits, batch["labels"].to(device))
            values.extend(nll_from_logprobs(logp, mask, per_sequence=True).tolist())
    finally:
        model.train(was_training)
    return values


@torch.no_grad()
def answer_losses(
    model: torch.nn.Module, tokenizer: Any, rows: Sequence[Row], max_length: int = 512, batch_size: int = 8
) -> list[tuple[float, int]]:
    """``(summed NLL, answer tokens)`` of each row's ``output`` given its ``input``, EOS included
    (TOFU's ``gt_loss`` and ``num_token_gt``; their ratio is its ``avg_gt_loss``). Rows are padded
    on the right in batches of ``batch_size``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = PairCollator(pad_token_id(tokenizer))
    encoded = encode(rows, tokenizer, max_length)
    values: list[tuple[float, int]] = []
    try:
        for start in range(0, len(encoded), batch_size):
            batch = collate.pad(list(enumerate(encoded[start : start + batch_size])))
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
            logp, mask = token_logprobs(logits, batch["labels"].to(device))
            sums, counts = -(logp * mask).sum(-1), mask.sum(-1)
            values += [(float(s), int(c)) for s, c in zip(sums, counts)]
    finally:
        model.train(was_training)
    return values


def answer_nll(
    model: torch.nn.Module, tokenizer: Any, rows: Sequence[Row], max_length: int = 512, batch_size: int = 8
) -> list[float]:
    """Mean NLL of each row's ``output`` given its ``input`` (EOS included, as in training)."""
    return _nll(model, pad_token_id(tokenizer), encode(rows, tokenizer, max_length), batch_size)
