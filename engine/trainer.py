"""The shared trainer: the HF ``Trainer`` with the loss delegated to the chosen method's hook."""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

from unlearn.config import Config
from unlearn.context import LossContext, RunContext
from unlearn.errors import NonFiniteLossError
from unlearn.losses import PER_TERM, LossOutput, TermBackward

from .host import Method, PluginHost
from .reference_model import CachedReference

COMPLETE = "unlearn_complete"  # written into a checkpoint once all its files are on disk


def last_checkpoint(folder: Path, clean: bool = False) -> str | None:
    """The newest complete checkpoint in ``folder``, or None; ``clean`` removes incomplete ones (a
    save that a crash or a kill cut short), so a resume never reads a half-written checkpoint."""
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    complete = [p for p in found if (p / COMPLETE).is_file()]
    for partial in set(found) - set(complete) if clean else ():
        shutil.rmtree(partial, ignore_errors=True)
    return str(complete[-1]) if complete else None


class StepClock(TrainerCallback):
    """Wall seconds of each optimiser step (the run report's ``step_seconds``)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _share_fp32_shards() -> None:
    """Make ZeRO-3 train float32 shards in place. DeepSpeed 0.19 skips its fp32 master copy of a
    shard already fp32 on its device, but compares the device with a device *name*, which is never
    equal (``torch.device("cpu") == "cpu"`` is False): one more fp32 shard per rank. Compare devices."""
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3 as Stage3

    create = getattr(Stage3, "_create_fp32_partitions", None)  # a later DeepSpeed may rename or fix it
    if create is None or getattr(create, "compares_devices", False):
        return

    def compared_as_devices(self: Any) -> None:
        name = self.device
        if isinstance(name, str) and not getattr(self, "offload_optimizer", True):
            self.device = torch.device(name)
        try:
            create(self)
        finally:
            self.device = name

    compared_as_devices.compares_devices = True  # type: ignore[attr-defined]
    Stage3._create_fp32_partitions = compared_as_devices


class UnlearnTrainer(Trainer):
    """Calls ``compute_loss`` of the chosen method, guards against NaN/inf and logs the terms.

    Everything else (DeepSpeed, accumulation, checkpoints, progress bars) is the HF Trainer's.
    """

    def __init__(
        self,
        *args: Any,
        host: PluginHost,
        method: Method,
        method_config: Config,
        reference: CachedReference | None = None,
        run: RunContext | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.host = host
        self.method = method
        self.method_config = method_config
        self.reference = reference
        self.run = run
        self._terms: dict[str, list[float]] = defaultdict(list)
        self.clock = StepClock()
        self.add_callback(self.clock)
        if self.is_deepspeed_enabled and is_deepspeed_zero3_enabled():
            _share_fp32_shards()
        if reference is not None:
            reference.prepare = self._place_reference
            reference.release_hook = self._release_reference
            reference.sharded = is_deepspeed_zero3_enabled()

    def _place_reference(self, model: torch.nn.Module) -> torch.nn.Module:
        """The reference where the trained model is: its device, and under DeepSpeed ZeRO-3 an
        engine of its own (the same config, no optimiser), sharded like the trained model.

        Under ZeRO-3 ``from_pretrained`` already partitioned it (the Trainer's DeepSpeed config is
        active), and only an engine gathers each layer's shards for its forward pass: a bare
        module would run on empty parameters. The engine's hooks live on the module's layers, so
        the module is returned and called as usual. Other stages get a plain replicated copy.
        """
        if not is_deepspeed_zero3_enabled():
            return model.to(self.args.device)
        import deepspeed

        config = copy.deepcopy(self.accelerator.state.deepspeed_plugin.deepspeed_config)
        for key in ("optimizer", "scheduler"):
            config.pop(key, None)
        engine, *_ = deepspeed.initialize(model=model, config=config)
        engine.module.eval()
        self._reference_engine = engine  # keeps its hooks' owner alive
        return engine.module

    def _release_reference(self) -> None:
        engine = getattr(self, "_reference_engine", None)
        if engine is not None:
            engine.destroy()
            # DeepSpeed 0.19's destroy leaves two module-level references that kept the freed
            # reference's shards: a module stack and a class-wide (pure) cache of params to release.
            from deepspeed.runtime.zero import parameter_offload as z3

            z3.FWD_MODULE_STACK[:] = [m for m in z3.FWD_MODULE_STACK if m is not engine.module]
            cached = vars(z3.PartitionedParameterCoordinator).get("_PartitionedParameterCoordinator__params_to_release")
            for cell in getattr(cached, "__closure__", None) or ():  # the lru_cache inside a wrapper
                getattr(cell.cell_contents, "cache_clear", lambda: None)()
            self._reference_engine = None

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        if self.reference is not None and not self.reference.draws:  # rows of a split this rank draws
            self.reference.draws = (
                self.state.max_steps * self.args.train_batch_size * self.args.gradient_accumulation_steps
            )
        ctx = LossContext(model, inputs, self.state.global_step, self.reference, self.run)
        terms = None
        if self.run is not None and self.run.config.trainer.backward == "per-term":
            terms = TermBackward(self._backward_scale(num_items_in_batch))
        token = PER_TERM.set(terms)
        try:
            result = self.host.call("compute_loss", self.method, config=self.method_config, ctx=ctx)
        finally:
            PER_TERM.reset(token)
        if self.reference is not None:
            self.reference.settle()  # before the backward pass: a freed reference lowers the peak
        if result is None:
            raise RuntimeError(
                f"plugin {self.method.plugin!r} registered the loss method {self.method.name!r} "
                "but its compute_loss returned nothing"
            )
        out = result if isinstance(result, LossOutput) else LossOutput(result)
        loss = out.loss
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError(f"method {self.method.name!r} must return a scalar tensor, got {loss!r}")
        value = float(loss.detach())
        logs = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.logs.items()}
        if not math.isfinite(value):
            terms = ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
            raise NonFiniteLossError(
                f"the loss of method {self.method.name!r} became {value} at step {self.state.global_step}"
                + (f" ({terms})" if terms else "")
                + ". Training stopped and no model was written; the input model is unchanged. "
                "Lower trainer.learning_rate, clip harder (trainer.max_grad_norm) or use a bounded loss."
            )
        for key, val in logs.items():
            self._terms[key].append(val)
        # per-term: the Trainer's own backward takes the last group (the earlier ones are detached)
        if terms is not None and terms.output is not None and terms.output is not out:
            raise RuntimeError(
                f"method {self.method.name!r}: with trainer.backward = 'per-term' compute_loss must return "
                "the LossOutput it called add_term on (earlier terms were backpropagated from it)"
            )
        return (loss, None) if return_outputs else loss

    def _backward_scale(self, num_items_in_batch: Any) -> Any:
        """``training_step``'s backward: its gradient-accumulation scale, through the accelerator."""
        scaled = self.loss_is_scaled_for_ga
        if scaled is None:
            normalised = self.model_accepts_loss_kwargs and num_items_in_batch is not None
            scaled = normalised or self.compute_loss_func is not None
        steps = 1 if scaled else self.current_gradient_accumulation_steps
        return lambda loss: self.accelerator.backward(loss / steps)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if _internal_call and self.is_deepspeed_enabled and is_deepspeed_zero3_enabled():
            # A checkpoint under ZeRO-3: a resume (and best_by) reads DeepSpeed's sharded state; a
            # model gathered on rank 0 beside the optimiser state would be the run's memory peak.
            return
        super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every rank has written its part
        if self.args.should_save:
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            for file in [*(p for p in folder.rglob("*") if p.is_file()), folder]:
                fd = os.open(file, os.O_RDONLY)
                os.fsync(fd)  # the files first, then the marker: it can only name a whole checkpoint
                os.close(fd)
            (folder / COMPLETE).touch()

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a training log: add the mean of each term since the last one
            for key, values in self._terms.items():
                if values:
                    logs[key] = round(sum(values) / len(values), 4)
            self._terms.clear()
        super().log(logs, *args, **kwargs)
