"""Where a run executes: the device a process claims (and what its children see), the
single-process torch.distributed variables, and DeepSpeed's configuration (the presets
``zero0``..``zero3`` and sizes fitted to the model)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch

from unlearn.errors import ConfigError

from .settings import TrainerSettings

DEEPSPEED_PRESETS = {f"zero{stage}": stage for stage in range(4)}


def _parse_device(spec: str) -> torch.device | None:
    """``spec`` as a device (None for ``auto``); anything but auto/cpu/cuda/cuda:N is an error."""
    if spec.strip().lower() == "auto":
        return None
    try:
        device = torch.device(spec.strip().lower())
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {spec!r}: choose auto, cpu, cuda or cuda:N")
    return device


def resolve_device(spec: str) -> torch.device:
    """The device a model is placed on: ``auto`` (the first GPU when there is one, else the CPU),
    ``cpu``, ``cuda`` or ``cuda:N``; a GPU this machine does not have is an error naming it."""
    device = _parse_device(spec) or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        raise ConfigError(f"device {spec!r}: this machine has {count} CUDA device(s)")
    return device


def visible_devices(spec: str, visible: str | None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` that gives a process (and its children) exactly ``spec``, given
    the current value (None: unset, every GPU): ``""`` for cpu, the N-th visible GPU for cuda:N,
    None (unchanged) for auto and cuda."""
    device = _parse_device(spec)
    if device is None or device.type == "cpu":
        return None if device is None else ""
    if device.index is None or visible is None:
        return None if device.index is None else str(device.index)
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if device.index >= len(entries):
        raise ConfigError(f"device {spec!r}: CUDA_VISIBLE_DEVICES={visible!r} shows {len(entries)} device(s)")
    return entries[device.index]


def claim_device(spec: str) -> torch.device:
    """Make ``spec`` the device of this process and what it launches (the way launchers do it,
    through ``CUDA_VISIBLE_DEVICES``: the HF Trainer always takes ``cuda:0``, or ``LOCAL_RANK``, and
    puts other visible GPUs in DataParallel), and return it. A rank of a multi-process launcher
    takes its own GPU, so it accepts auto, cpu and cuda only."""
    if spec in _CLAIMED:  # claimed already (a recipe's runs): the mask is in place
        return _CLAIMED[spec]
    parsed = _parse_device(spec)
    pinned = parsed is not None and parsed.type == "cuda" and parsed.index is not None
    if pinned and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"device {spec!r}: a rank takes its own GPU; choose them with CUDA_VISIBLE_DEVICES")
    mask = visible_devices(spec, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if mask is not None:
        if pinned and torch.cuda.is_initialized():
            raise ConfigError(f"device {spec!r}: CUDA already started here; set CUDA_VISIBLE_DEVICES instead")
        os.environ["CUDA_VISIBLE_DEVICES"] = mask  # cpu: the Trainer also gets use_cpu, in case CUDA started
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if parsed is not None and parsed.type == "cuda" and not gpus:
        shown = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise ConfigError(f"device {spec!r}: no such CUDA device here (CUDA_VISIBLE_DEVICES={shown})")
    cuda = gpus and (parsed is None or parsed.type == "cuda")
    _CLAIMED[spec] = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    return _CLAIMED[spec]


_CLAIMED: dict[str, torch.device] = {}


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_distributed_env() -> None:
    """Set the single-process torch.distributed variables DeepSpeed needs, if a launcher didn't."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    single = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    for key, value in single.items():
        os.environ.setdefault(key, value)


def deepspeed_config(
    value: Path | dict[str, Any],
    trainer: TrainerSettings,
    world_size: int = 1,
    hidden_size: int | None = None,
    resumed_sub_group: int | None = None,
) -> dict[str, Any]:
    """Read a DeepSpeed config (a file, a table, or a preset ``zero0``..``zero3``) and fill
    what the Trainer and a loadable save need. ``resumed_sub_group`` is the ZeRO-3 optimiser
    sub-group size of the checkpoint a run resumes from (`checkpoint_sub_group`), kept unless
    the config sets one.

    Batch sizes come from ``trainer.*``; ``train_batch_size`` is left for DeepSpeed to derive,
    because the Trainer computes it before it knows the world size, which breaks multi-rank runs.
    """
    if isinstance(value, dict):
        cfg = json.loads(json.dumps(value))
    elif str(value) in DEEPSPEED_PRESETS and not Path(value).exists():
        cfg = {"zero_optimization": {"stage": DEEPSPEED_PRESETS[str(value)]}}
    else:
        try:
            cfg = json.loads(Path(value).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"deepspeed: {value}: file not found") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"deepspeed: {value}: not valid JSON ({exc})") from None
    sizes = {
        "train_micro_batch_size_per_gpu": trainer.batch_size,
        "gradient_accumulation_steps": trainer.gradient_accumulation_steps,
        "train_batch_size": trainer.batch_size * trainer.gradient_accumulation_steps * world_size,
    }
    for key, wanted in sizes.items():
        given = cfg.get(key, "auto")
        if given != "auto" and given != wanted:
            raise ConfigError(
                f"deepspeed: {key} = {given} disagrees with the trainer settings ({wanted} with "
                f'{world_size} process(es)); set it to "auto" or change trainer.*'
            )
        cfg[key] = wanted
    del cfg["train_batch_size"]
    cfg.setdefault("gradient_clipping", "auto")
    zero = cfg.setdefault("zero_optimization", {})
    if int(zero.get("stage", 0)) == 3:
        # Without this ZeRO-3 saves shards instead of a loadable safetensors model.
        zero.setdefault("stage3_gather_16bit_weights_on_model_save", True)
        # HF sizes these from the hidden size; DeepSpeed's 5e8-element buckets outweigh a small model
        zero.update({k: zero.get(k, "auto") for k in ("reduce_bucket_size", "stage3_prefetch_bucket_size")})
        if resumed_sub_group:  # DeepSpeed loads an optimiser state only into the sub-groups it was saved from
            zero.setdefault("sub_group_size", resumed_sub_group)
        if hidden_size:
            for key, size in zero3_layer_sizes(hidden_size).items():
                zero.setdefault(key, size)
    return cfg


def zero3_layer_sizes(hidden_size: int) -> dict[str, int]:
    """ZeRO-3 settings sized to about one layer (12 h^2) instead of DeepSpeed's 1e9 elements.

    The live-parameter defaults keep every gathered layer until the backward pass reuses it (a whole
    model per rank at the peak); in one optimiser sub-group each step flattens a rank's whole
    gradient partition into a new fp32 tensor."""
    keys = ("stage3_max_live_parameters", "stage3_max_reuse_distance", "sub_group_size")
    return dict.fromkeys(keys, 12 * hidden_size**2)
