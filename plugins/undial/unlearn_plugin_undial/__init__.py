"""UNDIAL: unlearning by self-distillation on adjusted logits (Dong et al. 2025, NAACL,
arXiv:2402.10052). Instead of ascending the loss, the model is distilled towards the frozen
reference's own next-token distribution with the true token's logit lowered by ``beta``::

    target_t = softmax(z_ref_t - beta * onehot(y_t))
    UNDIAL   = mean over answer tokens t of  CE(softmax(z_theta_t), target_t)
    loss     = forget_weight * UNDIAL + retain_nll_weight * NLL(R)

A fixed target: the loss is bounded and has its minimum where the model assigns the true token
the reference's probability shrunk by ``exp(-beta)``, so it cannot collapse the way gradient
ascent does. Costs one reference forward per step (full logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, answer_positions, hookimpl, search


class UndialConfig(Config):
    """Settings of UNDIAL; defaults from open-unlearning's UNDIAL config (beta 10, no retain term)."""

    beta: float = Field(
        10.0,
        gt=0,
        description="How far the true token's logit is lowered in the target.",
        json_schema_extra=search(1, 30, log=True),
    )
    forget_weight: float = Field(1.0, ge=0, description="Weight of the self-distillation loss.")
    retain_nll_weight: float = Field(
        0.0, ge=0, description="Weight of NLL on the retain batch (paper: none).", json_schema_extra=search(0, 2)
    )


def undial_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Cross-entropy of the model's next-token distribution against the reference's with the
    label's logit lowered by ``beta``, averaged over answer tokens; logits [B, T, V], labels [B, T]."""
    student, targets = answer_positions(logits, labels)
    teacher, _ = answer_positions(ref_logits, labels)
    adjusted = teacher.float().clone()
    adjusted[torch.arange(len(targets)), targets] -= beta
    return F.cross_entropy(student.float(), adjusted.softmax(-1))


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "undial",
        config=UndialConfig,
        kind="loss",
        summary="UNDIAL: self-distillation towards the reference with the true token's logit lowered",
        uses_retain=True,
    )


@hookimpl
def compute_loss(method: str, config: UndialConfig, ctx: LossContext) -> LossOutput:
    labels = ctx.batch["forget"]["labels"]
    loss = undial_loss(ctx.outputs("forget").logits, ctx.reference_logits("forget"), labels, config.beta)
    out = LossOutput(config.forget_weight * loss, {"undial": loss})
    return out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
