"""STAT, YNU's random-label forgetting (3rd at SemEval-2025 Task 4): train the forget answers
towards randomly sampled tokens with ordinary NLL, alternating with retain batches.

Loss (YNU's system description, task paper arXiv:2504.02883): on a forget batch
``forget_weight * NLL(F with random labels)``, on a
retain batch ``retain_weight * NLL(R)``. YNU did not publish the sampling. **Our choice:** every
forget answer token (EOS included) is replaced by a token drawn uniformly from the tokens that
occur in the retain answers, so the model is taught fluent but wrong continuations rather than
byte noise; the draw is fixed per row by the seed. Batches alternate ``forget_batches`` forget
batches and ``retain_batches`` retain batches, the retain examples cycling through the retain set.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import Field

from unlearn import IGNORE_INDEX, Config, Encoded, LossContext, LossOutput, Register, RetainCycle, hookimpl, search


class STATConfig(Config):
    """Settings of random-label forgetting."""

    forget_batches: int = Field(1, ge=1, description="Forget batches in a row before the retain ones.")
    retain_batches: int = Field(1, ge=0, description="Retain batches after each run of forget batches.")
    forget_weight: float = Field(1.0, ge=0, json_schema_extra=search(0.1, 10, log=True))
    retain_weight: float = Field(1.0, ge=0, json_schema_extra=search(0.1, 10, log=True))


def random_labels(example: Encoded, pool: Sequence[int], rng: random.Random) -> Encoded:
    """The example with every answer token replaced by a draw from ``pool`` (the prompt stays)."""
    ids = [t if label == IGNORE_INDEX else rng.choice(pool) for t, label in zip(example.input_ids, example.labels)]
    labels = [IGNORE_INDEX if label == IGNORE_INDEX else t for t, label in zip(ids, example.labels)]
    return Encoded(ids, labels, example.task)


def stat_schedule(
    forget: Sequence[Encoded], retain: Sequence[Encoded], config: STATConfig, seed: int, batch_size: int
) -> list[dict]:
    pool = sorted({t for e in retain for t in e.labels if t != IGNORE_INDEX})
    rng = random.Random(seed)
    order = list(range(len(forget)))
    rng.shuffle(order)
    relabelled = {i: random_labels(forget[i], pool, random.Random(f"{seed}-{i}")) for i in order}
    items: list[dict] = []
    cycle = RetainCycle(retain)
    per_block = config.forget_batches * batch_size
    for start in range(0, len(order), per_block):
        block = order[start : start + per_block]
        block += (order * per_block)[: -len(block) % batch_size]  # fill a short last batch from the start
        items += [{"forget": (i, relabelled[i])} for i in block]
        items += cycle.take(config.retain_batches * batch_size)
    return items


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "stat",
        config=STATConfig,
        kind="loss",
        uses_retain=True,
        summary="Random-label forgetting alternating with retain batches (YNU's STAT)",
    )


@hookimpl
def schedule(method: str, config: STATConfig, forget, retain, seed: int, batch_size: int) -> list[dict]:
    return stat_schedule(forget, retain, config, seed, batch_size)


@hookimpl
def compute_loss(method: str, config: STATConfig, ctx: LossContext) -> LossOutput:
    if ctx.has("forget"):
        nll = ctx.nll("forget")  # NLL towards the random labels: descending it overwrites the answers
        return LossOutput(config.forget_weight * nll, {"random_label_nll": nll})
    nll = ctx.nll("retain")
    return LossOutput(config.retain_weight * nll, {"retain_nll": nll})
