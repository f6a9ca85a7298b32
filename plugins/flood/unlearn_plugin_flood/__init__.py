"""Flooded gradient difference: ascend on each forget answer only until its NLL reaches a level.

Plain gradient ascent pushes the forget answers' NLL up for as long as training lasts, so how much
is forgotten (and how much utility is lost with it) depends on the epochs and the learning rate.
The LOSS membership-inference attack, and with it the official MIA score, rewards something
else: forget documents exactly as likely as text the model never saw, neither more (memorised)
nor less (over-forgotten). Flooding (Ishida et al. 2020, "Do We Need Zero Training Loss After
Achieving Zero Training Loss?", ICML, arXiv:2002.08709) keeps a loss near a level ``b`` by
descending above it and ascending below it, ``|L - b| + b``; applied per forget answer with the
sign of unlearning, it ascends while an answer's NLL is below ``b`` and (``two_sided``) descends
once it is above, so each answer settles at the level instead of running away::

    forget = mean over forget answers i of  |b - NLL_i|        (two_sided; else  max(b - NLL_i, 0))
    loss   = forget_weight * forget + retain_weight * NLL(R)

``NLL_i`` is answer i's mean token NLL (``ctx.nll("forget", per_sequence=True)``), ``NLL(R)`` the
retain batch's token average. Choose ``level`` near the NLL the model gives comparable text it
never saw (a non-member's); with ``level`` far above every answer's NLL the forget term is
gradient ascent, so GD is the limit of large levels.
"""

from __future__ import annotations

from pydantic import Field

from unlearn import Config, LossContext, LossOutput, Register, hookimpl, search


class FloodConfig(Config):
    """Settings of flooded gradient difference."""

    level: float = Field(
        3.0,
        gt=0,
        description="b: the per-token NLL (nats) each forget answer is driven to.",
        json_schema_extra=search(1, 16, log=True),
    )
    two_sided: bool = Field(
        True, description="Descend on answers whose NLL passed the level (|b - NLL|); False: max(b - NLL, 0)."
    )
    forget_weight: float = Field(1.0, ge=0, description="Weight of the flooded forget term.")
    retain_weight: float = Field(
        1.0, ge=0, description="Weight of the retain NLL (0: off).", json_schema_extra=search(0.1, 10, log=True)
    )


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "flood",
        config=FloodConfig,
        kind="loss",
        summary="Flooded GD: each forget answer's NLL driven to a level b, |b - NLL_i|, plus retain NLL",
        uses_retain=True,
    )


@hookimpl
def compute_loss(method: str, config: FloodConfig, ctx: LossContext) -> LossOutput:
    nll = ctx.nll("forget", per_sequence=True)  # [B]
    gap = config.level - nll
    forget = (gap.abs() if config.two_sided else gap.clamp(min=0)).mean()
    logs = {"flood": forget, "forget_nll": nll.mean(), "below_level": (gap > 0).float().mean()}
    out = LossOutput(config.forget_weight * forget, logs)
    return out.add_term("retain_nll", config.retain_weight, lambda: ctx.nll("retain"))
