"""SatImp (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM
Unlearning", ICML, arXiv:2505.11953): gradient ascent with each token weighted for
*saturation* (``p^beta1``: tokens already unlikely are done) and *importance* (``(1-p)^beta2``:
tokens the model is not yet sure of matter most), both from the detached probability::

    SatImp = mean over answer tokens t of  w_t * log p_theta(y_t),
             w_t = stopgrad(p_t) ** beta1 * (1 - stopgrad(p_t)) ** beta2
    loss   = forget_weight * SatImp + retain_nll_weight * NLL(R)
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, nll_from_logprobs, search


class SatImpConfig(Config):
    """Settings of SatImp; defaults from open-unlearning's SatImp config (beta1 5, beta2 1,
    forget weight 0.1, retain weight 1)."""

    beta1: float = Field(5.0, ge=0, description="Saturation exponent: weight p**beta1.")
    beta2: float = Field(1.0, ge=0, description="Importance exponent: weight (1-p)**beta2.")
    forget_weight: float = Field(
        0.1,
        ge=0,
        description="Weight of the reweighted ascent term (gamma).",
        json_schema_extra=search(0.01, 1, log=True),
    )
    retain_nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of NLL on the retain batch (alpha; 0: off).",
        json_schema_extra=search(0.1, 10, log=True),
    )


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "satimp",
        config=SatImpConfig,
        kind="loss",
        summary="SatImp: ascent with token weights p**beta1 * (1-p)**beta2, plus retain NLL",
        uses_retain=True,
    )


@hookimpl
def compute_loss(method: str, config: SatImpConfig, ctx: LossContext) -> LossOutput:
    logp, mask = ctx.token_logprobs("forget")
    p = logp.detach().exp()
    weight = p**config.beta1 * (1 - p) ** config.beta2
    forget = -nll_from_logprobs(weight * logp, mask)  # the weighted log-probs' token average
    out = LossOutput(config.forget_weight * forget, {"satimp": forget, "forget_nll": nll_from_logprobs(logp, mask)})
    return out.add_term("retain_nll", config.retain_nll_weight, lambda: ctx.nll("retain"))
