"""Merging unlearned models onto the input model: TIES, DARE-TIES, task arithmetic.

Every model to merge gives a task vector ``tau_i = theta_i - theta_base``:

- ``task_arithmetic``: ``theta_base + sum_i w_i * tau_i``;
- ``ties``: keep each tau_i's top-``density`` entries by magnitude (per tensor), elect the sign
  of every entry by the sign of ``sum_i w_i * tau_i``, and average the weighted entries that
  agree with it, ``sum_agree w_i tau_i / sum_agree w_i``;
- ``dare_ties``: like TIES, but entries are dropped at random (kept with probability
  ``density``, rescaled by 1/density) and the agreeing entries are summed, not averaged.

Full models are merged with ``mergekit`` (its Python API, on the CPU). When every input is a
LoRA adapter (``unlearn-plugin-lora`` with ``save = "adapter"``) they are merged as adapters
with ``peft``'s ``add_weighted_adapter`` (TIES on the A and B matrices, as ZJUKLAB did; task
arithmetic as the exact ``sum_i w_i B_i A_i``), then folded into the base weights.

What is merged: ``run.inputs`` (in a run, the model just trained; in a recipe step, the runs it
names), then ``models``. The base is ``base`` or the run's input model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from unlearn import Config, ConfigError, PostContext, Register, hookimpl, search

WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
TOKENIZER_FILES = ("tokenizer", "special_tokens", "vocab", "merges", "chat_template")
PEFT_COMBINATION = {"ties": "ties", "dare_ties": "dare_ties", "task_arithmetic": "cat"}


class MergeConfig(Config):
    """How to merge; defaults are ZJUKLAB's TIES (density 0.8, weights 1, 1)."""

    merge_method: Literal["ties", "dare_ties", "task_arithmetic"] = Field("ties", description="The merge rule.")
    density: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Fraction of each task vector kept (TIES, DARE-TIES).",
        json_schema_extra=search(0.2, 1.0),
    )
    weights: list[float] | None = Field(None, description="One weight per merged model, in order (default: 1 each).")
    models: list[str] = Field(default_factory=list, description="More model or LoRA-adapter folders to merge.")
    base: str | None = Field(None, description="The base of the task vectors (default: the run's input model).")
    normalize: bool | None = Field(
        None, description="Divide by the sum of weights (default: TIES yes, DARE-TIES and task arithmetic no)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype of the merged weights.")
    seed: int = Field(0, description="Seed of DARE's random drops.")


def is_adapter(folder: Path) -> bool:
    """A LoRA adapter folder (``adapter_config.json``) rather than a full model."""
    return (folder / "adapter_config.json").is_file()


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ConfigError(f"config.merge: {folder}: not a folder")
    if not (folder / "config.json").is_file() and not is_adapter(folder):
        raise ConfigError(
            f"config.merge: {folder}: neither a model (config.json) nor a LoRA adapter (adapter_config.json)"
        )


def merge_models(models: list[Path], base: Path, output_dir: Path, config: MergeConfig) -> None:
    """Merge ``models`` onto ``base`` into ``output_dir`` (a new, empty folder)."""
    for folder in [*models, base]:
        _check_folder(folder)
    if not models:
        raise ConfigError("config.merge: nothing to merge")
    weights = config.weights if config.weights is not None else [1.0] * len(models)
    if len(weights) != len(models):
        raise ConfigError(
            f"config.merge.weights: {len(weights)} weight(s) for {len(models)} model(s) ({[str(m) for m in models]})"
        )
    if all(is_adapter(m) for m in models):
        _merge_adapters(models, weights, base, output_dir, config)
        return
    with tempfile.TemporaryDirectory(prefix="unlearn-merge-", dir=output_dir.parent) as tmp:
        full = [(_fold_adapter(m, base, Path(tmp) / f"{i}") if is_adapter(m) else m) for i, m in enumerate(models)]
        _mergekit(full, weights, base, output_dir, config)


def _fold_adapter(adapter: Path, base: Path, output_dir: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(output_dir)
    return output_dir


def _mergekit(models: list[Path], weights: list[float], base: Path, output_dir: Path, config: MergeConfig) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    parameters: dict[str, Any] = {}
    if config.normalize is not None:
        parameters["normalize"] = config.normalize
    entries = []
    for model, weight in zip(models, weights):
        per_model = {"weight": weight}
        if config.merge_method != "task_arithmetic":
            per_model["density"] = config.density
        entries.append({"model": str(model), "parameters": per_model})
    merge_config = MergeConfiguration.model_validate(
        {
            "merge_method": config.merge_method,
            "base_model": str(base),
            "models": entries,
            "parameters": parameters,
            "dtype": config.dtype,
        }
    )
    options = MergeOptions(
        copy_tokenizer=False,
        write_model_card=False,
        quiet=True,
        trust_remote_code=False,
        random_seed=config.seed,
        safe_serialization=True,
    )
    run_merge(merge_config, str(output_dir), options=options)


def _merge_adapters(
    adapters: list[Path], weights: list[float], base: Path, output_dir: Path, config: MergeConfig
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if config.normalize:
        raise ConfigError("config.merge.normalize: not available when merging LoRA adapters (peft decides)")
    torch.manual_seed(config.seed)  # DARE's drops
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[config.dtype]
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapters[0], adapter_name="m0"
    )
    names = ["m0"]
    for i, adapter in enumerate(adapters[1:], start=1):
        model.load_adapter(adapter, adapter_name=f"m{i}")
        names.append(f"m{i}")
    kwargs: dict[str, Any] = {"combination_type": PEFT_COMBINATION[config.merge_method]}
    if config.merge_method != "task_arithmetic":
        kwargs["density"] = config.density
    model.add_weighted_adapter(names, weights, adapter_name="merged", **kwargs)
    model.set_adapter("merged")
    for name in names:
        model.delete_adapter(name)
    model.merge_and_unload().to(dtype).save_pretrained(output_dir)


def _inputs(config: MergeConfig, run: Any) -> list[Path]:
    models = [Path(p) for p in getattr(run, "inputs", [])] + [Path(m) for m in config.models]
    seen: list[Path] = []
    for model in models:
        if model.resolve() not in [s.resolve() for s in seen]:
            seen.append(model)
    return seen


@hookimpl
def register_methods(register: Register) -> None:
    register(
        "merge",
        config=MergeConfig,
        kind="post-process",
        summary="TIES / DARE-TIES / task-arithmetic merge of unlearned models (mergekit) or LoRA adapters (peft)",
    )


@hookimpl
def post_process(method: str, config: MergeConfig, output_dir: Path, run: PostContext) -> None:
    models = _inputs(config, run)
    base = Path(config.base) if config.base else Path(run.base_model)
    merged = output_dir.parent / f".{output_dir.name}.merged"
    shutil.rmtree(merged, ignore_errors=True)
    merge_models(models, base, merged, config)
    # The merged folder replaces the weights; tokenizer and run files stay (or come from the first input).
    for pattern in (*WEIGHT_GLOBS, "adapter_config.json", "model.safetensors.index.json"):
        for old in output_dir.glob(pattern):
            old.unlink()
    source = next((m for m in [*models, base] if any(m.glob("tokenizer*"))), None)
    for item in source.iterdir() if source is not None else []:
        if item.is_file() and item.name.startswith(TOKENIZER_FILES) and not (output_dir / item.name).exists():
            shutil.copy2(item, output_dir / item.name)
    for item in merged.iterdir():
        shutil.move(str(item), output_dir / item.name)
    merged.rmdir()
