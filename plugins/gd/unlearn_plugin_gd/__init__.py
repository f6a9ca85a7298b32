"""Gradient difference (GD): ascend on the forget set, descend on the retain set.

Loss: ``-NLL(F) + lambda * NLL(R)``, each NLL the mean token negative
log-likelihood over answer tokens, every forget example paired with a retain example by the
core. Liu et al. 2022, "Continual Learning and Private Unlearning" (arXiv:2203.12817); the
SemEval-2025 Task 4 organisers' baseline (TOFU-style).
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, search


class GDConfig(Config):
    """Settings of gradient difference."""

    retain_weight: float = Field(
        1.0,
        ge=0,
        description="lambda, the weight of the retain NLL (1.0 in TOFU and the SemEval baseline).",
        json_schema_extra=search(0.1, 10, log=True),
    )


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "gd", config=GDConfig, kind="loss", summary="Gradient difference: -NLL(F) + lambda * NLL(R)", uses_retain=True
    )


@hookimpl
def compute_loss(method: str, config: GDConfig, ctx: LossContext) -> LossOutput:
    forget_nll = ctx.nll("forget")
    out = LossOutput(-forget_nll, {"forget_nll": forget_nll})
    return out.add_term("retain_nll", config.retain_weight, lambda: ctx.nll("retain"))
