"""Negative Preference Optimization (NPO): DPO with only a "lose" side, a bounded alternative to
gradient ascent, optionally with a retain term.

Forget loss (Zhang et al. 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning", arXiv:2404.05868)::

    (2 / beta) * log(1 + (pi_theta(y|x) / pi_ref(y|x)) ** beta)
        = -(2 / beta) * logsigmoid(-beta * (log pi_theta(y|x) - log pi_ref(y|x)))

``variant="sequence"`` (the paper): log-probs summed over each answer, averaged over the batch.
``variant="batch_mean"`` (ZJUKLAB, 2nd at SemEval-2025 Task 4): the log-ratio of the batch-mean
token NLLs. The reference log-probs come from the core's cache, so the frozen model runs once
per forget row, not once per epoch. Total loss::

    npo_weight * NPO(F) + retain_kl_weight * KL(p_ref || p_theta)(R) + retain_nll_weight * NLL(R)

ZJUKLAB's two runs used (a, b, c) = (0.4, 0.4, 0.2) and (0.3, 0.3, 0.4).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, nll_from_logprobs, preference_loss, search


class NPOConfig(Config):
    """Settings of NPO; defaults from the paper (beta 0.1) with a retain NLL term (NPO-RT)."""

    beta: float = Field(
        0.1,
        gt=0,
        description="Inverse temperature of the preference loss (paper: 0.1).",
        json_schema_extra=search(0.01, 1, log=True),
    )
    variant: Literal["sequence", "batch_mean"] = Field(
        "sequence", description="sequence: per-answer summed log-probs (paper); batch_mean: ZJUKLAB's batch-mean NLL."
    )
    npo_weight: float = Field(1.0, ge=0, description="Weight of the NPO forget loss.")
    retain_nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of NLL on the retain batch (0 turns it off).",
        json_schema_extra=search(0.1, 10, log=True),
    )
    retain_kl_weight: float = Field(
        0.0, ge=0, description="Weight of KL(p_ref || p_theta) on the retain batch (0 turns it off)."
    )


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """``-(2/beta) * logsigmoid(-beta * (logp - ref_logp))``, averaged over what is given: the
    core's preference loss with no "win" side."""
    return preference_loss(None, logp - ref_logp, beta)


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "npo",
        config=NPOConfig,
        kind="loss",
        summary="Negative Preference Optimization, optional retain NLL/KL",
        uses_retain=True,
    )


@hookimpl
def compute_loss(method: str, config: NPOConfig, ctx: LossContext) -> LossOutput:
    logp, mask = ctx.token_logprobs("forget")
    ref_logp = ctx.reference_token_logprobs("forget")
    if config.variant == "sequence":
        forget = npo_loss((logp * mask).sum(-1), (ref_logp * mask).sum(-1), config.beta)
    else:
        forget = npo_loss(-nll_from_logprobs(logp, mask), -nll_from_logprobs(ref_logp, mask), config.beta)
    out = LossOutput(config.npo_weight * forget, {"npo": forget, "forget_nll": nll_from_logprobs(logp, mask)})
    out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
    return out.add_term("retain_kl", config.retain_kl_weight, lambda: ctx.kl_to_reference("retain"))
