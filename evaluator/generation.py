"""Batched greedy generation that gives the same text as the official one-example-at-a-time
script: raw prompts, left padding with an attention mask, stop at EOS, decode only new tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unlearn import pad_token_id

# Generation-config fields that make HF's greedy search differ from a plain argmax.
_PROCESSORS = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
}


def plain_greedy(model: Any) -> bool:
    """True when the model's generation config adds nothing to argmax decoding."""
    config = getattr(model, "generation_config", None)
    return config is None or all(getattr(config, k, None) in ok for k, ok in _PROCESSORS.items())


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as a left-padded batch (the last position is every prompt's last token)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def left_pad_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that give each left-padded row the positions it would have alone."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def _greedy_batch(
    model: Any, ids: torch.Tensor, mask: torch.Tensor, eos_id: int | None, max_new_tokens: int
) -> list[list[int]]:
    """Argmax decoding with a KV cache; a row that reaches EOS leaves the batch, so the rest
    run on a smaller batch (the main saving over ``model.generate`` on mixed-length answers)."""
    positions = left_pad_positions(mask)
    tokens: list[list[int]] = [[] for _ in range(len(ids))]
    alive = list(range(len(ids)))
    finished: set[int] = set()
    past, current = None, ids
    for _ in range(max_new_tokens):
        out = model(
            input_ids=current, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
        )
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1)
        for row, tok in zip(alive, nxt.tolist()):
            if row not in finished:
                tokens[row].append(tok)
                if tok == eos_id:
                    finished.add(row)
        keep = [k for k, row in enumerate(alive) if row not in finished]
        if not keep:
            break
        if len(keep) < len(alive) and hasattr(past, "batch_select_indices"):
            index = torch.tensor(keep, device=ids.device)
            past.batch_select_indices(index)
            alive = [alive[k] for k in keep]
            nxt, mask, positions = nxt[index], mask[index], positions[index]
        current = nxt[:, None]
        mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)
        positions = positions[:, -1:] + 1
    return tokens


@torch.no_grad()
def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = False,
    use_hf_generate: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts`` (in their order), without the prompt or special tokens.

    Prompts are sorted by length so a batch wastes little padding. Models whose generation
    config alters greedy search (repetition penalty, forced tokens, ...) go through
    ``model.generate``, as does ``use_hf_generate=True``.
    """
    pad_id = pad_token_id(tokenizer)
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    hf = use_hf_generate or not plain_greedy(model)
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
            ids, mask = left_pad([encoded[i] for i in idx], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            if hf:
                generated = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=pad_id,
                )
                new_tokens = [row.tolist() for row in generated[:, ids.shape[1] :]]
            else:
                new_tokens = _greedy_batch(model, ids, mask, tokenizer.eos_token_id, max_new_tokens)
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(new_tokens[row], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out
