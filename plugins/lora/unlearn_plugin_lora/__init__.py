"""LoRA parameter selection: train low-rank adapters on frozen weights with ``peft``.

Composes with any loss method (``unlearn run --method npo --with lora``). The frozen base is
the input model, so the reference model that KL/NPO need is the same network with the adapter
switched off (``peft``'s ``disable_adapter``): no second copy of the model is loaded.

After training the core saves the adapter (``adapter_model.safetensors``); ``post_process``
then merges it into the input model's weights and saves a full model (``save = "merged"``, the
default, what the evaluator and the organisers load), or keeps the adapter alone
(``save = "adapter"``) for adapter-level merging (``unlearn-plugin-merge``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from unlearn import Config, PostContext, Register, RunContext, hookimpl, search

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class LoRAConfig(Config):
    """Settings of the LoRA adapters; defaults are ZJUKLAB's (SemEval-2025 Task 4, 2nd) but rank 8."""

    rank: int = Field(
        8,
        ge=1,
        description="r, the rank of each adapter (ZJUKLAB: 32, AILS-NTUA: 16).",
        json_schema_extra=search(choices=[8, 16, 32]),
    )
    alpha: float = Field(
        16.0,
        gt=0,
        description="lora_alpha; the update is scaled by alpha / rank (ZJUKLAB: 32).",
        json_schema_extra=search(8, 64, log=True),
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input (ZJUKLAB: 0.05).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description='Module names to adapt (e.g. ["q_proj", "v_proj", "up_proj", "down_proj"]); '
        '"all-linear": every linear layer but the output head.',
    )
    layers: list[int] | None = Field(None, description="Adapt only these decoder layers (None: all).")
    save: Literal["merged", "adapter"] = Field(
        "merged", description="merged: a full model with the adapter folded in; adapter: the adapter alone."
    )


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "lora",
        config=LoRAConfig,
        kind="parameters",
        summary="Train LoRA adapters (peft); reference = adapter off; saves a merged model or the adapter",
    )


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names of every ``nn.Linear`` but the output head (``q_proj``, ``down_proj``, ...)."""
    head = model.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head
        }
    )


@hookimpl
def select_parameters(method: str, config: LoRAConfig, model: torch.nn.Module, run: RunContext) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules
    if targets == "all-linear":
        targets = linear_module_names(model)  # named, so that `layers` can restrict them
    peft_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        layers_to_transform=config.layers,
        bias="none",
        task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(model, peft_config)
    reference = getattr(run, "reference", None)
    if reference is not None:
        reference.share(wrapped, wrapped.disable_adapter)
    return wrapped


def merge_adapter(adapter_dir: Path, base_model: Path, output_dir: Path) -> None:
    """Fold the adapter in ``adapter_dir`` into ``base_model`` and save a full model to ``output_dir``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype="auto")  # keep the input model's dtype
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(output_dir)


@hookimpl
def post_process(method: str, config: LoRAConfig, output_dir: Path, run: PostContext) -> None:
    if config.save == "adapter" or not (output_dir / "adapter_config.json").is_file():
        return
    merged = output_dir / "lora-merged"
    merge_adapter(output_dir, run.base_model, merged)
    for name in ADAPTER_FILES:
        (output_dir / name).unlink()
    for item in merged.iterdir():
        shutil.move(str(item), output_dir / item.name)
    merged.rmdir()
