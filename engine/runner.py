"""One unlearning run, end to end, as named stages (`STAGES`): resolve the plugins and settings,
load the data and the model, select parameters, build the trainer, train, save, post-process,
write atomically. A crashed run resumes from its last checkpoint when started again
with the same config; the input model is only ever read."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import torch

from unlearn.atomic import check_output, publish
from unlearn.config import Config
from unlearn.data import Encoded, PairCollator, PairedDataset, ScheduledDataset, encode, load_rows, resolve_split
from unlearn.errors import ConfigError, NonFiniteLossError, RunError
from unlearn.losses import answer_probe

from .alternates import choose_alternates, encode_alternates
from .devices import claim_device, deepspeed_config, ensure_distributed_env
from .host import Method, PluginHost, get_host
from .monitor import build_monitor
from .reference_model import CachedReference
from .run_state import RunState
from .settings import RunConfig

CONFIG_FILE = "unlearn_config.json"
REPORT_FILE = "unlearn_run.json"
# The first PROBE_ROWS forget rows are probed before and after a run: one that leaves every probed
# answer the input model reproduced still reproduced, or moves their mean token NLL by less than
# BARELY_MOVED nats, is reported, since its output will score like the input model.
PROBE_ROWS, BARELY_MOVED = 32, 0.05


def weights_dtype(config: RunConfig) -> torch.dtype:
    """The dtype of the weights being trained: float32 under mixed precision, else ``trainer.dtype``."""
    return torch.float32 if config.trainer.precision == "mixed" else getattr(torch, config.trainer.dtype)


def load_input_model(config: RunConfig) -> torch.nn.Module:
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


@dataclass
class _Run:
    """One run as its stages hand it on: each stage reads what the earlier ones filled in."""

    config: RunConfig
    host: PluginHost
    overwrite: bool
    callbacks: Sequence[Any]
    started: float = field(default_factory=time.time)
    method: Method = None  # resolve: the loss method, each chosen method's config, where to write
    method_configs: dict[str, Config] = field(default_factory=dict)
    output: Path = None
    work: Path = None
    is_main: bool = True
    tokenizer: Any = None  # load data: rows, the order of training items, alternate answers
    forget: list[Encoded] = field(default_factory=list)
    retain: list[Encoded] | None = None
    items: list[Any] | None = None
    alternates: list[Any] | None = None
    alternates_used: Any = None
    dataset: Any = None
    monitor: Any = None
    model: Any = None  # load model: the model, the probe of its answers, the reference, the context
    collate: PairCollator = None
    probe: list[dict[str, torch.Tensor]] = field(default_factory=list)
    before: dict[str, float] = field(default_factory=dict)
    reference: CachedReference | None = None
    ctx: RunState = None
    trainable: int = 0  # select parameters
    resumed: int | None = None  # build trainer: the ZeRO-3 sub-group size of the checkpoint resumed
    trainer: Any = None
    accelerator: Any = None
    last: str | None = None
    report: dict[str, Any] = field(default_factory=dict)


def run(
    config: RunConfig, host: PluginHost | None = None, overwrite: bool = False, callbacks: Sequence[Any] = ()
) -> Path:
    """Unlearn ``config.model`` into ``config.output_dir``; returns the output folder.

    The run is the stages in `STAGES`, in order, on every rank (`post_process` and `write` act on
    the main process only). ``callbacks`` are HF ``TrainerCallback`` objects added to the trainer
    (an application's hooks into training, e.g. `unlearn tune` reporting the signals to its
    study); a callback with a ``monitor`` attribute receives the run's `monitor.Monitor` (None
    without ``eval_steps``)."""
    state = _Run(config, host or get_host(), overwrite, callbacks)
    for stage in STAGES:
        stage(state)
    state.accelerator.wait_for_everyone()
    return state.output


def resolve(r: _Run) -> None:
    """Resolve the plugins and their configs, claim the device, check the settings and paths."""
    config, t = r.config, r.config.trainer
    if not t.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    r.method_configs = r.host.configure(config)
    r.method = r.host.method(config.method, kinds=("loss",))
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
    r.output, r.work = _check_paths(config, r.overwrite)
    if config.deepspeed is not None:
        ensure_distributed_env()
    r.is_main = int(os.environ.get("RANK", "0")) == 0
    if r.method.uses_retain and (config.retain or config.data) is None:
        raise ConfigError(f"method {r.method.name!r} needs a retain set: give `retain` or a `data` folder")


def load_data(r: _Run) -> None:
    """Tokenise the rows, ask the method for its order of items, pair forget rows with alternates."""
    from transformers import AutoTokenizer, set_seed

    config, t, method = r.config, r.config.trainer, r.method
    forget_src, retain_src = config.forget or config.data, config.retain or config.data
    set_seed(config.seed)
    r.tokenizer = tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    r.monitor = build_monitor(t, config.data, r.host, tokenizer) if t.eval_steps or t.score_steps else None
    forget_rows = load_rows(forget_src, "forget")
    r.forget = encode(forget_rows, tokenizer, t.max_length, t.append_eos)
    if method.uses_retain:
        r.retain = encode(load_rows(retain_src, "retain"), tokenizer, t.max_length, t.append_eos)
    if r.host.implements("schedule", method):
        r.items = r.host.call(
            "schedule",
            method,
            config=r.method_configs[method.name],
            forget=r.forget,
            retain=r.retain,
            seed=config.seed,
            batch_size=t.batch_size,
        )
    if method.alternate:  # each forget row with its alternate answers (a refusal, a rewrite)
        per_row = config.alternate.per_row or method.alternates_per_row
        where = str(resolve_split(forget_src, "forget"))
        texts, r.alternates_used = choose_alternates(
            forget_rows, method.alternate, config.alternate, per_row, config.seed, where
        )
        r.alternates = encode_alternates(forget_rows, texts, tokenizer, t.max_length, t.append_eos)
    if r.items is None:
        r.dataset = PairedDataset(r.forget, r.retain, t.retain_sampling, config.seed, r.alternates)
    elif r.alternates is not None:
        raise RunError(f"method {method.name!r}: a schedule hook's items cannot carry alternate answers")
    else:
        r.dataset = ScheduledDataset(r.items, t.batch_size, method.name)


def load_model(r: _Run) -> None:
    """Load the input model, probe its forget answers, prepare the staging folder and the reference."""
    config = r.config
    r.model = load_input_model(config)
    # Only once the inputs validated, so a bad file or model leaves no staging folder behind. Every
    # rank must agree on whether this resumes, so only rank 0 touches the folder.
    if r.is_main:
        prepare_work_dir(config, r.work, r.overwrite)
    r.collate = PairCollator(r.tokenizer.pad_token_id)
    forget = r.forget
    r.probe = [r.collate.pad(list(enumerate(forget[i : i + 8]))) for i in range(0, min(len(forget), PROBE_ROWS), 8)]
    r.before = answer_probe(r.model, r.probe) if r.is_main else {}
    r.reference = CachedReference(lambda: load_input_model(config), config.reference)
    r.reference.rows, r.reference.collate = {"forget": forget, "retain": r.retain or []}, r.collate
    r.reference.rows["alternate"] = [example for alts in r.alternates or [] for _, example in alts]
    r.ctx = RunState(config, r.method_configs, r.tokenizer, r.work, forget, r.retain, r.is_main, reference=r.reference)


def select_parameters(r: _Run) -> None:
    """Each chosen method's ``select_parameters``, in order, each on the previous one's model."""
    for name in r.config.methods():
        chosen = r.host.methods[name]
        if r.host.implements("select_parameters", chosen):
            selected = r.host.call("select_parameters", chosen, config=r.method_configs[name], model=r.model, run=r.ctx)
            r.model = selected if selected is not None else r.model
            del selected
    r.trainable = sum(p.numel() for p in r.model.parameters() if p.requires_grad)
    if r.trainable == 0:
        raise RunError(f"no parameter is trainable after parameter selection by {r.config.methods()}")


def build_trainer(r: _Run) -> None:
    """The trainer, with the run's monitor, TensorBoard and the application's callbacks."""
    from .trainer import UnlearnTrainer

    config, t = r.config, r.config.trainer
    # Every rank reads the checkpoint it will resume from (complete ones only; with --overwrite rank
    # 0 may be removing them, and nothing is resumed).
    r.resumed = resumed = checkpoint_sub_group(r.work) if config.deepspeed is not None and not r.overwrite else None
    hidden = getattr(r.model.config, "hidden_size", None)
    r.trainer = UnlearnTrainer(
        model=r.model,
        args=training_arguments(config, r.work, r.items is not None, hidden, resumed),
        train_dataset=r.dataset,
        data_collator=r.collate,
        processing_class=r.tokenizer,
        host=r.host,
        method=r.method,
        method_config=r.method_configs[r.method.name],
        reference=r.reference,
        run=r.ctx,
        callbacks=[c for c in (r.monitor, tensorboard(r.work) if t.tensorboard and r.is_main else None) if c],
    )
    for callback in r.callbacks:
        if hasattr(callback, "monitor"):
            callback.monitor = r.monitor
        r.trainer.add_callback(callback)
    if r.monitor is not None:
        r.monitor.trainer = r.trainer
    r.accelerator = r.trainer.accelerator


def train(r: _Run) -> None:
    """Train (resuming from the last complete checkpoint), keep the best step if asked, and record
    what training really used."""
    from .trainer import last_checkpoint

    trainer, resumed = r.trainer, r.resumed
    r.accelerator.wait_for_everyone()  # rank 0 has prepared the work folder
    r.last = last_checkpoint(r.work / "checkpoints", clean=r.is_main)
    try:
        result = trainer.train(resume_from_checkpoint=r.last)
    except ValueError as exc:  # torch's optimiser load: a DeepSpeed file changed sub_group_size since
        zero = (trainer.args.deepspeed or {}).get("zero_optimization", {})
        if not (resumed and int(zero.get("stage", 0)) == 3 and "size of optimizer's group" in str(exc)):
            raise
        raise RunError(
            f"{r.last}: saved in ZeRO-3 optimiser sub-groups of {resumed} elements, which {r.config.deepspeed} "
            f"now sets to {zero.get('sub_group_size')}; set sub_group_size back to {resumed} (or remove it) to "
            "resume, or pass --overwrite to start over"
        ) from None
    if trainer.state.best_model_checkpoint:  # best_by: the best evaluated step's weights, not the last
        trainer._load_best_model()
    # What training really used: the optimiser's own tensors hold the master weights
    master = {str(p.dtype) for group in trainer.optimizer.param_groups for p in group["params"]}
    steps, reference = trainer.clock.seconds, r.reference
    r.report = {
        "train": result.metrics,
        "monitor": r.monitor.report() if r.monitor is not None else None,
        "trainable_parameters": r.trainable,
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "device": str(trainer.args.device),
        "optimiser_dtype": sorted(master),
        "compute_dtype": r.config.trainer.dtype,
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


def save(r: _Run) -> None:
    """Save the trained model into ``work/model`` (every rank takes part: ZeRO-3 gathers the
    weights), then free the model, optimiser state and reference before post-processing loads models."""
    config, t, trainer, staging = r.config, r.config.trainer, r.trainer, r.work / "model"
    if r.is_main and staging.exists():
        shutil.rmtree(staging)
    r.accelerator.wait_for_everyone()
    release_optimizer_state(trainer.optimizer)  # the last checkpoint holds it; saving needs the room
    if config.deepspeed is None and weights_dtype(config) != getattr(torch, t.dtype):
        trainer.model.to(getattr(torch, t.dtype))  # mixed precision: written in the dtype asked for
    trainer.save_model(str(staging))
    r.accelerator.wait_for_everyone()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    r.trainer = r.model = r.reference = r.ctx.reference = None
    del trainer
    gc.collect()
    if config.deepspeed is not None:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # models loaded from here on (post-processing, the probe) are whole, not shards


def post_process(r: _Run) -> None:
    """Each chosen method's ``post_process`` on the saved model, in order (main process only)."""
    staging = r.work / "model"
    if not r.is_main:
        return
    (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; outputs stay safetensors-only
    r.ctx.inputs = [staging]
    for name in r.config.methods():
        chosen = r.host.methods[name]
        if r.host.implements("post_process", chosen):
            r.host.call("post_process", chosen, config=r.method_configs[name], output_dir=staging, run=r.ctx)
    if not any(staging.glob("*.safetensors")):
        raise RunError(f"{staging}: no safetensors weights after saving and post-processing")


def write(r: _Run) -> None:
    """Probe the output, write its config and report, and publish it (main process only)."""
    config, staging = r.config, r.work / "model"
    if not r.is_main:
        return
    (staging / CONFIG_FILE).write_text(json.dumps(config.dump(), indent=2))
    infos = [r.host.plugins[r.host.methods[name].plugin] for name in config.methods()]
    after = _probe_output(staging, r.probe, r.before)
    report = {
        "method": r.method.name,
        "with": config.with_,
        "resumed_from": r.last,
        "alternates": r.alternates_used,
        **r.report,
        "wall_time_s": round(time.time() - r.started, 2),
        "versions": {"unlearn-core": dist_version("unlearn-core")}
        | {i.distribution or i.name: i.version for i in infos},
        "forget_probe": {"rows": len(r.forget[:PROBE_ROWS]), "before": r.before, "after": after},
    }
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2))
    if (r.work / "tensorboard").is_dir():
        shutil.move(r.work / "tensorboard", staging / "tensorboard")
    publish(staging, r.output, "model")
    shutil.rmtree(r.work, ignore_errors=True)


STAGES = (resolve, load_data, load_model, select_parameters, build_trainer, train, save, post_process, write)
"""A run, in order: each stage takes the run as the ones before left it."""
