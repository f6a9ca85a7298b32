"""Alternate Preference Optimization (AltPO, Mekala et al. 2025, COLING, arXiv:2409.13474):
negative feedback on the forget answer combined with positive feedback on *in-domain* alternate
answers (plausible but false), several per forget row.

Each (forget row, alternate) pair is one training item (the paper: 5 alternates per row), with
the DPO preference of the alternate ``a`` over the forget answer ``y``, as the authors' code
(``forget_loss=subdpo``) computes it, plus the retain NLL::

    forget_weight * -(2/beta) * logsigmoid(beta * (log pi(a|x)/pi_ref(a|x) - log pi(y|x)/pi_ref(y|x)))
        + retain_nll_weight * NLL(R) [+ alternate_nll_weight * NLL(a | x)]

The alternates are rewrites (the row's own ``alternate`` field, else the core's value-swapping
rewrite; the paper has the model itself write them).
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, preference_loss, search


class AltPOConfig(Config):
    """Settings of AltPO; defaults from the authors' TOFU command (beta 0.1, retain weight 1)."""

    beta: float = Field(
        0.1,
        gt=0,
        description="Inverse temperature of the preference loss (paper: 0.1).",
        json_schema_extra=search(0.01, 1, log=True),
    )
    forget_weight: float = Field(1.0, ge=0, description="Weight of the alternate-over-forget preference loss.")
    retain_nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of NLL on the retain batch (0: off).",
        json_schema_extra=search(0.1, 10, log=True),
    )
    alternate_nll_weight: float = Field(
        0.0, ge=0, description="Weight of a plain NLL on the alternate (the authors' 'subnpo'-style positive term)."
    )


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "altpo",
        config=AltPOConfig,
        kind="loss",
        summary="Alternate Preference Optimization: prefer in-domain alternate answers over the forget answer",
        uses_retain=True,
        alternate="rewrite",
        alternates_per_row=5,
    )


@hookimpl
def compute_loss(method: str, config: AltPOConfig, ctx: LossContext) -> LossOutput:
    win, lose = ctx.sequence_log_ratio("alternate"), ctx.sequence_log_ratio("forget")
    preference = preference_loss(win, lose, config.beta)
    out = LossOutput(config.forget_weight * preference, {"altpo": preference, "lose_log_ratio": lose.mean()})
    out.add_term("alternate_nll", config.alternate_nll_weight, lambda: ctx.nll("alternate"))
    return out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
