"""The quantization attack: the unlearned model's linear weights rounded to few bits.

Zhang et al. 2024 (*Catastrophic Failure of LLM Unlearning via Quantization*, arXiv:2410.16454)
found that 4-bit quantization brings back much of what gradient-ascent-style methods unlearned
(on MUSE, forgotten knowledge went from 21% retained to 83%): those methods move the weights so
little that rounding them lands back near the original model.

``rtn`` (default) is round-to-nearest, symmetric, per group of ``group_size`` input weights of
every linear layer but the output head: each group's scale is its largest magnitude over
``2**(bits-1) - 1`` and each weight becomes ``round(w / scale) * scale``. It is plain torch, so it
runs wherever the model does, and the saved model holds the dequantized weights, which compute
what the quantized model computes. ``bitsandbytes`` rounds with bitsandbytes' own 8-bit and 4-bit
(NF4) kernels, as the paper did; it needs a CUDA GPU and the bitsandbytes package.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator

from unlearn import Attack, AttackContext, Attacked, Config, RunError, hookimpl


class QuantizeConfig(Config):
    bits: list[int] = Field([8, 4], description="One variant per bit width, 2 to 8.")
    group_size: int = Field(128, ge=1, description="rtn: input weights that share one scale.")
    method: Literal["rtn", "bitsandbytes"] = Field("rtn", description="rtn (plain torch) or bitsandbytes (GPU).")

    @field_validator("bits")
    @classmethod
    def _widths(cls, bits: list[int]) -> list[int]:
        if not bits or any(not 2 <= b <= 8 for b in bits):
            raise ValueError("give at least one bit width, each from 2 to 8")
        return bits


def round_to_nearest(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """``weight`` [out, in] quantized symmetrically per row and group of ``group_size`` input
    weights (the last group of a row may be shorter) and dequantized; same shape and dtype."""
    qmax = 2 ** (bits - 1) - 1
    rows, cols = weight.shape
    pad = (-cols) % group_size
    w = torch.nn.functional.pad(weight.float(), (0, pad)).view(rows, -1, group_size)
    scale = w.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero group stays zero
    q = torch.round(w / scale).clamp(-qmax, qmax) * scale
    return q.view(rows, -1)[:, :cols].to(weight.dtype)


def _bitsandbytes(weight: torch.Tensor, bits: int) -> torch.Tensor:
    import bitsandbytes.functional as bnb

    if bits == 4:
        packed, state = bnb.quantize_4bit(weight.cuda().half(), quant_type="nf4")
        return bnb.dequantize_4bit(packed, state).to(weight.dtype).to(weight.device)
    packed, state = bnb.quantize_blockwise(weight.cuda().float())
    return bnb.dequantize_blockwise(packed, state).to(weight.dtype).to(weight.device)


def quantize_model(model: torch.nn.Module, bits: int, config: QuantizeConfig) -> int:
    """Quantize every linear layer's weight in place but the output head's (kept at full precision
    by bitsandbytes and GPTQ alike); returns how many layers were quantized."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    done = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module is not head:
                if config.method == "rtn":
                    module.weight.copy_(round_to_nearest(module.weight, bits, config.group_size))
                else:
                    module.weight.copy_(_bitsandbytes(module.weight, bits))
                done += 1
    return done


class Quantize:
    name = "quantize"
    summary = "Weights rounded to 8 and 4 bits (RTN per group, or bitsandbytes): Zhang et al. 2024"
    config = QuantizeConfig

    def run(self, model: Path, data: Path, config: QuantizeConfig, ctx: AttackContext) -> list[Attacked]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if config.method == "bitsandbytes":
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                raise RunError("method bitsandbytes needs the bitsandbytes package; method rtn runs anywhere") from None
            if not torch.cuda.is_available() or set(config.bits) - {4, 8}:
                raise RunError("method bitsandbytes needs a CUDA GPU and bits of 4 or 8; method rtn runs anywhere")
        tokenizer = AutoTokenizer.from_pretrained(model)
        variants = []
        for bits in config.bits:
            net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(ctx.device)
            if quantize_model(net, bits, config) == 0:
                raise RunError(f"{model}: no linear layer to quantize")
            out = ctx.work / f"int{bits}"
            net.save_pretrained(out)
            tokenizer.save_pretrained(out)
            variants.append(Attacked(f"int{bits}", out, data))
        return variants


@hookimpl
def register_attacks(register: Callable[[Attack], None]) -> None:
    register(Quantize())
