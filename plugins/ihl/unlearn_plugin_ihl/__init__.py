"""Inverted hinge loss (IHL): a bounded forget loss that moves probability from each answer
token to its strongest competitor, instead of pushing likelihood down without limit as GA does.

Per forget answer token (Cha et al. 2024, "Learning to Unlearn: Instance-wise
Unlearning for Pre-trained Classifiers" / LoKU, "Towards Robust and Parameter-Efficient Knowledge
Unlearning for LLMs", arXiv:2408.06621)::

    IHL(y_t) = 1 + p(y_t) - max_{v != y_t} p(v)        in [0, 2]

averaged over the forget answer tokens, plus ``retain_nll_weight * NLL(R)``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from unlearn import IGNORE_INDEX, Config, LossContext, LossOutput, Register, hookimpl, search, shift


class IHLConfig(Config):
    """Settings of the inverted hinge loss."""

    retain_nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of NLL on the retain batch (0 turns it off).",
        json_schema_extra=search(0.1, 10, log=True),
    )


def inverted_hinge(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 + p(y_t) - max_{v != y_t} p(v)`` over answer tokens."""
    logits, labels = shift(logits, labels)
    mask = labels != IGNORE_INDEX
    probs = logits.float().softmax(-1)
    target = labels.clamp(min=0).unsqueeze(-1)
    p_true = probs.gather(-1, target).squeeze(-1)
    p_other = probs.scatter(-1, target, float("-inf")).max(-1).values
    per_token = 1 + p_true - p_other
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "ihl",
        config=IHLConfig,
        kind="loss",
        summary="Inverted hinge loss: bounded forgetting, plus retain NLL",
        uses_retain=True,
    )


@hookimpl
def compute_loss(method: str, config: IHLConfig, ctx: LossContext) -> LossOutput:
    forget = inverted_hinge(ctx.outputs("forget").logits, ctx.batch["forget"]["labels"])
    out = LossOutput(forget, {"ihl": forget, "forget_nll": ctx.nll("forget")})
    return out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
