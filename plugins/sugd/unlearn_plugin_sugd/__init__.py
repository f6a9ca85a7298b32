"""SUGD, AILS-NTUA's sequential chunked gradient difference (1st at SemEval-2025 Task 4).

The forget set is cut, in order, into chunks of ``chunk_size``; each chunk is trained for
``epochs_per_chunk`` epochs, every forget example followed by ``retain_per_forget`` retain
examples taken cyclically through the retain set. Per sample (AILS-NTUA, SemEval-2025 Task 4,
first place; task paper arXiv:2504.02883)::

    forget:  -forget_weight * NLL        retain:  retain_weight * NLL

Published settings: chunks of 32, 7 retain per forget, 7 epochs per chunk, lr 1e-5, batch size 1,
the last 8 decoder layers trained (LoRA r16/a64 on q, v, up, down as an alternative). With a
batch size B > 1 the order is kept per batch: B forget examples, then retain_per_forget batches
of B retain examples (a chunk's short last batch is filled from the chunk's start). Set
``trainer.epochs = 1``: the epochs live inside the schedule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from unlearn import (
    Config,
    Encoded,
    LossContext,
    LossOutput,
    Register,
    RetainCycle,
    decoder_layers,
    hookimpl,
    search,
    train_only,
)


class SUGDConfig(Config):
    """Settings of SUGD; defaults are AILS-NTUA's."""

    chunk_size: int = Field(32, ge=1, description="Forget examples per sequential chunk.")
    epochs_per_chunk: int = Field(
        7, ge=1, description="Passes over one chunk before the next.", json_schema_extra=search(1, 7)
    )
    retain_per_forget: int = Field(7, ge=0, description="Retain examples after each forget example.")
    forget_weight: float = Field(1.0, ge=0, description="Weight of the forget NLL (ascended).")
    retain_weight: float = Field(
        0.5, ge=0, description="Weight of the retain NLL (descended).", json_schema_extra=search(0.1, 2, log=True)
    )
    last_layers: int | None = Field(
        8, ge=1, description="Train only the last N decoder layers (None: every parameter)."
    )


def sugd_schedule(
    forget: Sequence[Encoded], retain: Sequence[Encoded], config: SUGDConfig, batch_size: int
) -> list[dict]:
    """Chunks in order; per group of ``batch_size`` forget items, ``retain_per_forget`` retain groups."""
    items: list[dict] = []
    cycle = RetainCycle(retain)
    for start in range(0, len(forget), config.chunk_size):
        chunk = list(range(start, min(start + config.chunk_size, len(forget))))
        for _ in range(config.epochs_per_chunk):
            for g in range(0, len(chunk), batch_size):
                # A short last group wraps around the chunk so batches never mix splits.
                group = (chunk[g : g + batch_size] + chunk * batch_size)[:batch_size]
                items += [{"forget": (i, forget[i])} for i in group]
                items += cycle.take(config.retain_per_forget * len(group))
    return items


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "sugd",
        config=SUGDConfig,
        kind="loss",
        uses_retain=True,
        summary="Sequential chunked gradient difference with cyclic retain samples (AILS-NTUA)",
    )


@hookimpl
def schedule(method: str, config: SUGDConfig, forget, retain, seed: int, batch_size: int) -> list[dict]:
    return sugd_schedule(forget, retain, config, batch_size)


@hookimpl
def select_parameters(method: str, config: SUGDConfig, model: torch.nn.Module, run: object) -> None:
    if config.last_layers is not None:
        count = len(decoder_layers(model))
        train_only(model, layers=range(max(0, count - config.last_layers), count))


@hookimpl
def compute_loss(method: str, config: SUGDConfig, ctx: LossContext) -> LossOutput:
    if ctx.has("forget"):
        nll = ctx.nll("forget")
        return LossOutput(-config.forget_weight * nll, {"forget_nll": nll})
    nll = ctx.nll("retain")
    return LossOutput(config.retain_weight * nll, {"retain_nll": nll})
