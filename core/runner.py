"""One unlearning run, end to end: resolve plugins, load, select parameters, train, save
atomically, post-process. A crashed run resumes from its last checkpoint when started again
with the same config; the input model is only ever read."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import socket
import statistics
import time
from collections.abc import Sequence
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import torch

from .alternates import choose_alternates, encode_alternates
from .atomic import check_output, publish
from .config import RunConfig, TrainerSettings
from .context import RunContext
from .data import PairCollator, PairedDataset, ScheduledDataset, encode, load_rows, resolve_split
from .errors import ConfigError, NonFiniteLossError, RunError
from .host import PluginHost, get_host
from .losses import answer_probe
from .monitor import build_monitor
from .reference import ReferenceModel

CONFIG_FILE = "unlearn_config.json"
DEEPSPEED_PRESETS = {f"zero{stage}": stage for stage in range(4)}
REPORT_FILE = "unlearn_run.json"
# The first PROBE_ROWS forget rows are probed before and after a run: one that leaves every probed
# answer the input model reproduced still reproduced, or moves their mean token NLL by less than
# BARELY_MOVED nats, is reported, since its output will score like the input model.
PROBE_ROWS, BARELY_MOVED = 32, 0.05


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


def weights_dtype(config: RunConfig) -> torch.dtype:
    """The dtype of the weights being trained: float32 under mixed precision, else ``trainer.dtype``."""
    return torch.float32 if config.trainer.precision == "mixed" else getattr(torch, config.trainer.dtype)


def load_model(config: RunConfig) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(config.model, dtype=weights_dtype(config))
    except Exception as exc:  # noqa: BLE001 - whatever a truncated or foreign checkpoint raises
        raise ConfigError(f"model: {config.model}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})") from None


def _check_paths(config: RunConfig, overwrite: bool) -> tuple[Path, Path]:
    if not (Path(config.model) / "config.json").is_file():
        raise ConfigError(f"model: {config.model}: not a Hugging Face model folder (no config.json)")
    ds = config.deepspeed if isinstance(config.deepspeed, Path) and config.deepspeed.exists() else None
    inputs = [config.model, config.tokenizer, config.data, config.forget, config.retain, ds, config.alternate.refusals]
    output = check_output(config.output_dir, "model", inputs, overwrite)
    return output, output.parent / f".{output.name}.partial"


def run_identity(dump: dict[str, Any]) -> dict[str, Any]:
    """The part of a dumped run config that decides its result: all of it but where it runs and
    whether bars are shown, so a run resumes (or a finished one counts as done) on another device."""
    trainer = {k: v for k, v in dump.get("trainer", {}).items() if k not in ("device", "progress")}
    return {**dump, "trainer": trainer}


def prepare_work_dir(config: RunConfig, work: Path, overwrite: bool) -> bool:
    """Create or reuse the staging folder; True if an earlier run with this config is resumed."""
    marker = work / CONFIG_FILE
    if work.exists() and (overwrite or not marker.is_file()):
        shutil.rmtree(work)
    if work.exists():
        if run_identity(json.loads(marker.read_text())) != run_identity(config.dump()):
            raise RunError(
                f"{work} holds an unfinished run with a different config; pass --overwrite to discard "
                "it, or run again with the same config to resume it"
            )
        return True
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(config.dump(), indent=2))
    return False


def checkpoint_sub_group(work: Path) -> int | None:
    """The ZeRO-3 optimiser sub-group size of the newest complete checkpoint in ``work``, or None.

    A checkpoint written before the presets sized the sub-groups has DeepSpeed's default (one group
    of 1e9 elements) and resumes only with it. DeepSpeed records its config in the small
    model-states file of each checkpoint (our own staging folder, so its pickle is ours)."""
    from .trainer import last_checkpoint

    last = last_checkpoint(work / "checkpoints")
    states = sorted(Path(last).glob("global_step*/*model_states.pt")) if last else []
    if not states:
        return None
    saved = torch.load(states[0], map_location="cpu", weights_only=False).get("ds_config") or {}
    return int(saved.get("zero_optimization", {}).get("sub_group_size", 1_000_000_000))


def training_arguments(
    config: RunConfig,
    work: Path,
    sequential: bool = False,
    hidden_size: int | None = None,
    resumed_sub_group: int | None = None,
) -> Any:
    """The HF ``TrainingArguments`` for a run; ``sequential`` keeps a method's own item order,
    ``hidden_size`` (the model's) sizes ZeRO-3's live parameters, ``resumed_sub_group`` see
    `deepspeed_config`."""
    from transformers import TrainingArguments

    t = config.trainer
    world = int(os.environ.get("WORLD_SIZE", "1"))
    deepspeed = (
        deepspeed_config(config.deepspeed, t, world, hidden_size, resumed_sub_group)
        if config.deepspeed is not None
        else None
    )
    return TrainingArguments(
        output_dir=str(work / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps else "epoch",
        save_steps=t.save_steps or 500,
        save_total_limit=2,  # the previous checkpoint stays until the newest is complete
        seed=config.seed,
        data_seed=config.seed,
        # mixed precision: autocast (or DeepSpeed's bf16/fp16 section) over float32 weights
        bf16=t.dtype == "bfloat16" and t.precision == "mixed",
        fp16=t.dtype == "float16" and t.precision == "mixed",
        activation_checkpointing=t.gradient_checkpointing,
        report_to=[],
        remove_unused_columns=False,  # batches are {"forget": ..., "retain": ...}
        train_sampling_strategy="sequential" if sequential else "random",
        disable_tqdm=not t.progress,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Without use_cpu, torchrun on a CPU machine gives every rank a world of one (no DDP).
        use_cpu=(t.device == "cpu" or not torch.cuda.is_available()) and config.deepspeed is None,
        deepspeed=deepspeed,
    )


def release_optimizer_state(optimizer: Any) -> None:
    """Drop the optimiser's per-parameter state (Adam's moments: twice the trained weights) once
    training is over, so that saving, which under ZeRO-3 gathers the whole model on rank 0, does
    not add a model's worth of memory on top of it. Unwraps accelerate's and DeepSpeed's wrappers."""
    while optimizer is not None:
        if isinstance(optimizer, torch.optim.Optimizer):
            optimizer.state.clear()
        optimizer = getattr(optimizer, "optimizer", None)


def tensorboard(work: Path) -> Any:
    """HF's TensorBoard callback writing into ``work/tensorboard`` (published with the model)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(work / "tensorboard")))


def _probe_output(folder: Path, batches: list[dict[str, torch.Tensor]], before: dict[str, float]) -> dict | None:
    """Probe the saved output (None for an adapter-only output, which does not load alone): refuse it if
    its weights are not finite, and warn if the run lost none of the probed answers the input model
    reproduced (none reproduced: if their NLL stood still)."""
    from transformers import AutoModelForCausalLM

    if not (folder / "config.json").is_file():
        return None
    model = AutoModelForCausalLM.from_pretrained(folder)
    if not all(bool(p.isfinite().all()) for p in model.parameters()):
        raise NonFiniteLossError(
            "the trained weights hold NaN or infinite values; nothing was written and the input "
            "model is unchanged. Lower trainer.learning_rate or clip harder (trainer.max_grad_norm)"
        )
    after = answer_probe(model, batches)
    if after["reproduces"] >= before["reproduces"] > 0 or abs(after["nll"] - before["nll"]) < BARELY_MOVED:
        logging.getLogger("unlearn").warning(
            f"warning: the model barely changed: it reproduces {after['reproduces']:.0f} of the "
            f"{sum(len(b['index']) for b in batches)} probed forget answers (before: {before['reproduces']:.0f}), "
            f"mean token NLL {before['nll']:.3f} -> {after['nll']:.3f};"
            " it will score like the input model. Raise trainer.learning_rate or train longer"
        )
    return after


def run(
    config: RunConfig, host: PluginHost | None = None, overwrite: bool = False, callbacks: Sequence[Any] = ()
) -> Path:
    """Unlearn ``config.model`` into ``config.output_dir``; returns the output folder.

    ``callbacks`` are HF ``TrainerCallback`` objects added to the trainer (an application's hooks
    into training, e.g. `unlearn tune` reporting the signals to its study); a callback with a
    ``monitor`` attribute receives the run's `monitor.Monitor` (None without ``eval_steps``)."""
    from transformers import AutoTokenizer, set_seed

    from .trainer import UnlearnTrainer, last_checkpoint

    host = host or get_host()
    if not config.trainer.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    method_configs = host.configure(config)
    method = host.method(config.method, kinds=("loss",))
    t = config.trainer
    claim_device(t.device)  # before anything starts CUDA
    if t.precision == "mixed" and not torch.cuda.is_available():
        if t.dtype == "float16" or (t.dtype == "bfloat16" and config.deepspeed is not None):
            where = "float16 autocast" if t.dtype == "float16" else "DeepSpeed's bf16 mode"
            raise ConfigError(
                f"trainer.dtype = {t.dtype!r}: mixed precision here needs a GPU ({where}); on this CPU set "
                'trainer.precision = "pure" or use trainer.dtype = "bfloat16" without DeepSpeed'
            )
    if t.backward == "per-term" and config.deepspeed is not None:
        raise ConfigError(
            'trainer.backward = "per-term" does not run under DeepSpeed (its engine takes one backward pass '
            'per micro-batch); use "joint" there, or trainer.gradient_checkpointing for memory'
        )
    output, work = _check_paths(config, overwrite)
    if config.deepspeed is not None:
        ensure_distributed_env()
    is_main = int(os.environ.get("RANK", "0")) == 0
    started = time.time()

    forget_src = config.forget or config.data
    retain_src = config.retain or config.data
    if method.uses_retain and retain_src is None:
        raise ConfigError(f"method {method.name!r} needs a retain set: give `retain` or a `data` folder")
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    monitor = build_monitor(t, config.data, host, tokenizer) if t.eval_steps or t.score_steps else None
    forget_rows = load_rows(forget_src, "forget")
    forget = encode(forget_rows, tokenizer, t.max_length, t.append_eos)
    retain = (
        encode(load_rows(retain_src, "retain"), tokenizer, t.max_length, t.append_eos) if method.uses_retain else None
    )
    items = None
    if host.implements("schedule", method):
        items = host.call(
            "schedule",
            method,
            config=method_configs[method.name],
            forget=forget,
            retain=retain,
            seed=config.seed,
            batch_size=t.batch_size,
        )
    alternates, alternates_used = None, None
    if method.alternate:  # each forget row with its alternate answers (a refusal, a rewrite)
        per_row = config.alternate.per_row or method.alternates_per_row
        where = str(resolve_split(forget_src, "forget"))
        texts, alternates_used = choose_alternates(
            forget_rows, method.alternate, config.alternate, per_row, config.seed, where
        )
        alternates = encode_alternates(forget_rows, texts, tokenizer, t.max_length, t.append_eos)
    if items is not None:
        if alternates is not None:
            raise RunError(f"method {method.name!r}: a schedule hook's items cannot carry alternate answers")
        dataset: torch.utils.data.Dataset = ScheduledDataset(items, t.batch_size, method.name)
    else:
        dataset = PairedDataset(forget, retain, t.retain_sampling, config.seed, alternates)

    model = load_model(config)
    # Only once the inputs validated, so a bad file or model leaves no staging folder behind. Every
    # rank must agree on whether this resumes, so only rank 0 touches the folder.
    if is_main:
        prepare_work_dir(config, work, overwrite)
    collate = PairCollator(tokenizer.pad_token_id)
    probe = [collate.pad(list(enumerate(forget[i : i + 8]))) for i in range(0, min(len(forget), PROBE_ROWS), 8)]
    before = answer_probe(model, probe) if is_main else {}
    reference = ReferenceModel(lambda: load_model(config), config.reference)
    reference.rows, reference.collate = {"forget": forget, "retain": retain or []}, collate
    reference.rows["alternate"] = [example for alts in alternates or [] for _, example in alts]
    ctx = RunContext(config, method_configs, tokenizer, work, forget, retain, is_main, reference=reference)
    for name in config.methods():
        chosen = host.methods[name]
        if host.implements("select_parameters", chosen):
            selected = host.call("select_parameters", chosen, config=method_configs[name], model=model, run=ctx)
            model = selected if selected is not None else model
            del selected
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise RunError(f"no parameter is trainable after parameter selection by {config.methods()}")

    # Every rank reads the checkpoint it will resume from (complete ones only; with --overwrite rank
    # 0 may be removing them, and nothing is resumed).
    resumed = checkpoint_sub_group(work) if config.deepspeed is not None and not overwrite else None
    hidden = getattr(model.config, "hidden_size", None)
    trainer = UnlearnTrainer(
        model=model,
        args=training_arguments(config, work, items is not None, hidden, resumed),
        train_dataset=dataset,
        data_collator=collate,
        processing_class=tokenizer,
        host=host,
        method=method,
        method_config=method_configs[method.name],
        reference=reference,
        run=ctx,
        callbacks=[c for c in (monitor, tensorboard(work) if t.tensorboard and is_main else None) if c],
    )
    for callback in callbacks:
        if hasattr(callback, "monitor"):
            callback.monitor = monitor
        trainer.add_callback(callback)
    if monitor is not None:
        monitor.trainer = trainer
    trainer.accelerator.wait_for_everyone()  # rank 0 has prepared the work folder
    last = last_checkpoint(work / "checkpoints", clean=is_main)
    try:
        result = trainer.train(resume_from_checkpoint=last)
    except ValueError as exc:  # torch's optimiser load: a DeepSpeed file changed sub_group_size since
        zero = (trainer.args.deepspeed or {}).get("zero_optimization", {})
        if not (resumed and int(zero.get("stage", 0)) == 3 and "size of optimizer's group" in str(exc)):
            raise
        raise RunError(
            f"{last}: saved in ZeRO-3 optimiser sub-groups of {resumed} elements, which {config.deepspeed} now "
            f"sets to {zero.get('sub_group_size')}; set sub_group_size back to {resumed} (or remove it) to "
            "resume, or pass --overwrite to start over"
        ) from None
    if trainer.state.best_model_checkpoint:  # best_by: the best evaluated step's weights, not the last
        trainer._load_best_model()
    monitored = monitor.report() if monitor is not None else None
    # What training really used: the optimiser's own tensors hold the master weights
    master = {str(p.dtype) for group in trainer.optimizer.param_groups for p in group["params"]}
    steps = trainer.clock.seconds
    measured = {
        "device": str(trainer.args.device),
        "optimiser_dtype": sorted(master),
        "compute_dtype": t.dtype,
        # the first step also loads the reference and fills its caches
        "step_seconds": {
            "first": round(steps[0], 4) if steps else None,
            "median_after_first": round(statistics.median(steps[1:]), 4) if len(steps) > 1 else None,
        },
        "reference": {
            "used": sorted({w for w, _ in reference.asked}),
            "forward_passes": reference.forward_passes,
            "kept": reference.loaded,
        }
        if reference.asked
        else None,
    }

    staging = work / "model"
    if is_main and staging.exists():
        shutil.rmtree(staging)
    trainer.accelerator.wait_for_everyone()
    release_optimizer_state(trainer.optimizer)  # the last checkpoint holds it; saving needs the room
    if config.deepspeed is None and weights_dtype(config) != getattr(torch, t.dtype):
        trainer.model.to(getattr(torch, t.dtype))  # mixed precision: written in the dtype asked for
    trainer.save_model(str(staging))  # every rank takes part: ZeRO-3 gathers the weights
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    # Free the trained model, optimiser state and reference before post-processing loads models.
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    del trainer, model, reference
    ctx.reference = None
    gc.collect()
    if config.deepspeed is not None:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # models loaded from here on (post-processing, the probe) are whole, not shards
    if is_main:
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; outputs stay safetensors-only
        ctx.inputs = [staging]
        for name in config.methods():
            chosen = host.methods[name]
            if host.implements("post_process", chosen):
                host.call("post_process", chosen, config=method_configs[name], output_dir=staging, run=ctx)
        if not any(staging.glob("*.safetensors")):
            raise RunError(f"{staging}: no safetensors weights after saving and post-processing")
        (staging / CONFIG_FILE).write_text(json.dumps(config.dump(), indent=2))
        infos = [host.plugins[host.methods[name].plugin] for name in config.methods()]
        after = _probe_output(staging, probe, before)
        report = {
            "method": method.name,
            "with": config.with_,
            "resumed_from": last,
            "alternates": alternates_used,
            "train": result.metrics,
            "monitor": monitored,
            "trainable_parameters": trainable,
            "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
            **measured,
            "wall_time_s": round(time.time() - started, 2),
            "versions": {"unlearn-core": dist_version("unlearn-core")}
            | {i.distribution or i.name: i.version for i in infos},
            "forget_probe": {"rows": len(forget[:PROBE_ROWS]), "before": before, "after": after},
        }
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2))
        if (work / "tensorboard").is_dir():
            shutil.move(work / "tensorboard", staging / "tensorboard")
        publish(staging, output, "model")
        shutil.rmtree(work, ignore_errors=True)
    accelerator.wait_for_everyone()
    return output
