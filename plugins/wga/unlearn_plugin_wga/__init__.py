"""Weighted gradient ascent (WGA, Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A
Gradient Perspective and Go Beyond", ICLR, arXiv:2502.19301). Gradient ascent whose token
terms are weighted by the model's own (detached) probability of the token, ``p^beta``: tokens
already unlikely stop pushing, which curbs GA's excessive unlearning::

    WGA  = mean over answer tokens t of  w_t * log p_theta(y_t),   w_t = stopgrad(p_theta(y_t)) ** beta
    loss = forget_weight * WGA + retain_nll_weight * NLL(R)

(minimising ``w * log p`` lowers ``log p``: ascent on the NLL, weighted).
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, nll_from_logprobs, search


class WGAConfig(Config):
    """Settings of WGA; defaults from the paper and open-unlearning (beta 1, weights 1)."""

    beta: float = Field(
        1.0,
        ge=0,
        description="Exponent of the token weight p**beta (0: plain gradient ascent).",
        json_schema_extra=search(0.1, 3, log=True),
    )
    forget_weight: float = Field(1.0, ge=0, description="Weight of the weighted ascent term (gamma).")
    retain_nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of NLL on the retain batch (alpha; 0: off).",
        json_schema_extra=search(0.1, 10, log=True),
    )


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "wga",
        config=WGAConfig,
        kind="loss",
        summary="Weighted gradient ascent: token terms weighted by p**beta, plus retain NLL",
        uses_retain=True,
    )


@hookimpl
def compute_loss(method: str, config: WGAConfig, ctx: LossContext) -> LossOutput:
    logp, mask = ctx.token_logprobs("forget")
    weight = logp.detach().exp() ** config.beta
    forget = -nll_from_logprobs(weight * logp, mask)  # the weighted log-probs' token average
    out = LossOutput(config.forget_weight * forget, {"wga": forget, "forget_nll": nll_from_logprobs(logp, mask)})
    return out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
