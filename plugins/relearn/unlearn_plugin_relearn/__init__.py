"""ReLearn: unlearning via learning (Xu et al. 2025, ACL, arXiv:2502.11190; zjunlp/unlearn,
the ZJUKLAB lab's method). Instead of pushing the forget answers down, the model learns
*augmented* answers to the forget prompts, fluent and in the domain but without the facts, while
a KL term and an NLL term on the retain set hold the rest in place (the authors' default
``relearn_klr_gdr``)::

    loss = forget_weight * NLL(a | x)(F) + retain_kl_weight * KL(p_ref || p_theta)(R)
           + retain_nll_weight * NLL(R)

``a`` ranges over each forget row's rewrites (the row's own ``alternate`` field, else the core's
value-swapping rewrite; the paper has an LLM write them): each (row, rewrite) pair is one
training item, five per row by default.
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, search


class ReLearnConfig(Config):
    """Settings of ReLearn; the authors' default loss ``relearn_klr_gdr`` weighs every term 1."""

    forget_weight: float = Field(1.0, ge=0, description="Weight of the NLL of the augmented answers.")
    retain_kl_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of KL(p_ref || p_theta) on the retain batch.",
        json_schema_extra=search(0.1, 10, log=True),
    )
    retain_nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of NLL on the retain batch (0: off).",
        json_schema_extra=search(0.1, 10, log=True),
    )


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "relearn",
        config=ReLearnConfig,
        kind="loss",
        summary="ReLearn: learn augmented positive answers for forget prompts, with retain KL and NLL",
        uses_retain=True,
        alternate="rewrite",
        alternates_per_row=5,
    )


@hookimpl
def compute_loss(method: str, config: ReLearnConfig, ctx: LossContext) -> LossOutput:
    learned = ctx.nll("alternate")
    out = LossOutput(config.forget_weight * learned, {"alternate_nll": learned})
    out.add_term("retain_kl", config.retain_kl_weight, lambda: ctx.kl_to_reference("retain"))
    return out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
