"""DPO for unlearning: prefer an alternate answer over the forget answer. With a refusal as the
alternate (the default) this is IdkDPO (Maini et al. 2024, TOFU; Zhang et al. 2024, NPO).

Forget loss (Rafailov et al. 2023, "Direct Preference Optimization", arXiv:2305.18290), with
TOFU's and open-unlearning's 2/beta scale and per-answer summed log-probs::

    -(2 / beta) * logsigmoid(beta * ((log pi(a|x) - log pi_ref(a|x)) - (log pi(y|x) - log pi_ref(y|x))))

``a`` is the alternate ("win"), ``y`` the forget answer ("lose"). Both reference sides come from
the core's cache, so the frozen model runs once per row for the whole run. Total loss::

    forget_weight * DPO + retain_nll_weight * NLL(R) + retain_kl_weight * KL(p_ref || p_theta)(R)
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, preference_loss, search


class DPOConfig(Config):
    """Settings of DPO; defaults from TOFU's IdkDPO and open-unlearning (beta 0.1, weights 1)."""

    beta: float = Field(
        0.1,
        gt=0,
        description="Inverse temperature of the preference loss (TOFU: 0.1).",
        json_schema_extra=search(0.01, 1, log=True),
    )
    forget_weight: float = Field(1.0, ge=0, description="Weight of the preference loss (open-unlearning: gamma).")
    retain_nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of NLL on the retain batch (alpha; 0: off).",
        json_schema_extra=search(0.1, 10, log=True),
    )
    retain_kl_weight: float = Field(0.0, ge=0, description="Weight of KL(p_ref || p_theta) on the retain batch.")


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "dpo",
        config=DPOConfig,
        kind="loss",
        summary="DPO with an alternate answer as 'win' and the forget answer as 'lose' (IdkDPO with refusals)",
        uses_retain=True,
        alternate="refusal",
    )


@hookimpl
def compute_loss(method: str, config: DPOConfig, ctx: LossContext) -> LossOutput:
    win, lose = ctx.sequence_log_ratio("alternate"), ctx.sequence_log_ratio("forget")
    forget = preference_loss(win, lose, config.beta)
    out = LossOutput(config.forget_weight * forget, {"dpo": forget, "win_log_ratio": win.mean()})
    out.logs["lose_log_ratio"] = lose.mean()
    out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
    return out.add_term("retain_kl", config.retain_kl_weight, lambda: ctx.kl_to_reference("retain"))
