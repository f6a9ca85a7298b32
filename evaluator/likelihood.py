"""Per-example negative log-likelihoods, batched: the quantity behind the LOSS membership attack
and the quickest check that a forget set was forgotten."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from unlearn.data import Encoded, PairCollator, Row, encode
from unlearn.losses import nll_from_logprobs, token_logprobs


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
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
            logp, mask = token_logprobs(logits, batch["labels"].to(device))
            values.extend(nll_from_logprobs(logp, mask, per_sequence=True).tolist())
    finally:
        model.train(was_training)
    return values


def answer_nll(model: torch.nn.Module, tokenizer: Any, rows: Sequence[Row], max_length: int = 512, batch_size: int = 8) -> list[float]:
    """Mean NLL of each row's ``output`` given its ``input`` (EOS included, as in training)."""
    return _nll(model, _pad_id(tokenizer), encode(rows, tokenizer, max_length), batch_size)


def document_nll(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int = 512, batch_size: int = 8) -> list[float]:
    """Mean NLL of every token of each document (``labels = input_ids``), SPEC's LOSS attack."""
    encoded = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_length]
        encoded.append(Encoded(ids, list(ids)))
    return _nll(model, _pad_id(tokenizer), encoded, batch_size)


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
