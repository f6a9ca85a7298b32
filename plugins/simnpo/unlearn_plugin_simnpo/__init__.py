"""SimNPO: NPO without a reference model, on the length-normalised NLL.

Forget loss (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization
for LLM Unlearning", arXiv:2410.07163)::

    -(2 / beta) * logsigmoid(beta * NLL_sum(y|x) / |y| - gamma)

averaged over the forget answers, plus ``retain_nll_weight * NLL(R)``. With the TOFU default
gamma = 0 this is the task paper's formula (arXiv:2504.02883); gamma enters with the paper's sign, as a margin the
normalised NLL must clear. No reference model is loaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, search


class SimNPOConfig(Config):
    """Settings of SimNPO; defaults are TOFU's (beta 2.5, gamma 0) with a retain NLL term."""

    beta: float = Field(
        2.5, gt=0, description="Inverse temperature (TOFU: 2.5).", json_schema_extra=search(0.5, 5, log=True)
    )
    gamma: float = Field(0.0, description="Reward margin (TOFU: 0).", json_schema_extra=search(0, 2))
    retain_nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of NLL on the retain batch (0 turns it off).",
        json_schema_extra=search(0.1, 10, log=True),
    )


def simnpo_loss(nll_per_token: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """``-(2/beta) * logsigmoid(beta * nll - gamma)`` for per-answer mean NLLs, averaged."""
    return (-(2.0 / beta) * F.logsigmoid(beta * nll_per_token - gamma)).mean()


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "simnpo",
        config=SimNPOConfig,
        kind="loss",
        summary="SimNPO: reference-free NPO on the length-normalised NLL",
        uses_retain=True,
    )


@hookimpl
def compute_loss(method: str, config: SimNPOConfig, ctx: LossContext) -> LossOutput:
    per_answer = ctx.nll("forget", per_sequence=True)  # NLL_sum / |y| for each answer
    forget = simnpo_loss(per_answer, config.beta, config.gamma)
    out = LossOutput(forget, {"simnpo": forget, "forget_nll": per_answer.mean()})
    return out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
