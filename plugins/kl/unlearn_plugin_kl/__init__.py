"""KL minimisation: gradient ascent on the forget set, and keep the retain set's next-token
distributions close to the original model's.

Loss: ``-NLL(F) + w * KL(p_ref || p_theta)`` on the retain batch, the KL
summed over the vocabulary and averaged over answer positions; ``p_ref`` is the frozen input
model, provided by the core. Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"
(arXiv:2401.06121); a SemEval-2025 Task 4 organiser baseline.
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, search


class KLConfig(Config):
    """Settings of KL minimisation."""

    kl_weight: float = Field(
        1.0,
        ge=0,
        description="w, the weight of the retain KL (1.0 in TOFU).",
        json_schema_extra=search(0.1, 10, log=True),
    )


@hookimpl
def register_methods(register: Register) -> None:
    register("kl", config=KLConfig, kind="loss", summary="-NLL(F) + KL(p_ref || p_theta) on R", uses_retain=True)


@hookimpl
def compute_loss(method: str, config: KLConfig, ctx: LossContext) -> LossOutput:
    forget_nll = ctx.nll("forget")
    return LossOutput(-forget_nll, {"forget_nll": forget_nll}).add_term(
        "retain_kl", config.kl_weight, lambda: ctx.kl_to_reference("retain")
    )
