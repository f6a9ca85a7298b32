"""Batched greedy generation that gives the same text as the official one-example-at-a-time
script: raw prompts, left padding with an attention mask, stop at EOS, decode only new tokens."""

from __future__ import annotations

from typing import Any, Sequence

import torch


@torch.no_grad()
def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts`` (in their order), without the prompt or special tokens.

    Prompts are sorted by length so a batch wastes little padding.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = [""] * len(prompts)
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generating", unit="batch")
    try:
        for start in starts:
            idx = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(encoded[i])
                ids[row, width - n :] = torch.tensor(encoded[i])
                mask[row, width - n :] = 1
            generated = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad_id,
            )
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out
