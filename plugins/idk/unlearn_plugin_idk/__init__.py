"""IdkNLL (rejection tuning): learn a refusal such as "I don't know" as the answer to each forget
prompt, keeping the retain set. TOFU's "idk" baseline (Maini et al. 2024, arXiv:2401.06121) and
RWKU's rejection tuning (Jin et al. 2024, arXiv:2406.10890)::

    forget_weight * NLL(a | x)(F) + retain_nll_weight * NLL(R) + retain_kl_weight * KL(p_ref || p_theta)(R)

``a`` is the row's alternate: by default a refusal (the run's ``alternate`` settings choose the
refusal file; TOFU's ``idontknow.jsonl`` works). NLLs are mean token NLLs over the batch.
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, search


class IdkConfig(Config):
    """Settings of IdkNLL; TOFU weighs both terms 1."""

    forget_weight: float = Field(1.0, ge=0, description="Weight of the NLL of the refusal on forget prompts.")
    retain_nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of NLL on the retain batch (0: off).",
        json_schema_extra=search(0.1, 10, log=True),
    )
    retain_kl_weight: float = Field(0.0, ge=0, description="Weight of KL(p_ref || p_theta) on the retain batch.")


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "idk",
        config=IdkConfig,
        kind="loss",
        summary="IdkNLL / rejection tuning: NLL of a refusal on forget prompts, plus retain NLL",
        uses_retain=True,
        alternate="refusal",
    )


@hookimpl
def compute_loss(method: str, config: IdkConfig, ctx: LossContext) -> LossOutput:
    refusal = ctx.nll("alternate")
    out = LossOutput(config.forget_weight * refusal, {"alternate_nll": refusal})
    out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
    return out.add_term("retain_kl", config.retain_kl_weight, lambda: ctx.kl_to_reference("retain"))
