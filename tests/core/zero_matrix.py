"""Every installed loss method (and NPO+KL with LoRA) under ZeRO-3, and one of each kind of data
path under ZeRO-2 (ZERO2), in one launch.

``torchrun --nproc_per_node 2 zero_matrix.py MODEL DATA OUT`` runs each case for two steps with
``unlearn.engine.run`` in the same two processes (one launch instead of one per case: DeepSpeed's start
costs more than the runs), and writes ``OUT/rank{R}.json``: each case's outcome, plus what a probe
method saw of the ZeRO-3 reference (its label log-probs beside the unsharded input model's, and
how many parameter elements this rank holds of it).
"""

from __future__ import annotations

import gc
import json
import sys
import traceback
import weakref
from pathlib import Path

import torch
from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3 as Stage3
from pydantic import BaseModel, ConfigDict
from transformers import AutoModelForCausalLM

from unlearn import LossContext, hookimpl, token_logprobs
from unlearn.engine import RunConfig, get_host, run

# ZeRO-2 replicates the parameters, so only the data paths can differ by method there: plain (gd),
# a reference every step (kl), cached reference log-probs (npo), hidden states (rmu), a schedule
# (sugd), alternate answers with cached (dpo) and per-step (relearn) reference outputs.
ZERO2 = {"gd", "kl", "npo", "rmu", "sugd", "dpo", "relearn"}


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReferenceProbe:
    """A loss method that records the sharded reference's label log-probs and local size at step 0,
    and at step 1 whether the reference network, freed once its log-probs were cached, is gone and
    whether the optimiser's fp32 master shards are the model's own float32 shards."""

    def __init__(self, model_dir: str) -> None:
        self.plain = AutoModelForCausalLM.from_pretrained(model_dir).eval()  # unsharded, before ZeRO-3 starts
        self.seen: dict = {}

    @hookimpl
    def register_methods(self, register):
        register("zero-probe", config=Empty, kind="loss", uses_retain=False)

    @hookimpl
    def compute_loss(self, method, config, ctx: LossContext):
        if not self.seen:
            part = ctx.batch["forget"]
            ref = ctx.reference_token_logprobs("forget")
            with torch.no_grad():
                logits = self.plain(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits
            plain, mask = token_logprobs(logits, part["labels"])
            params = list(ctx.reference.model.parameters())
            self.seen = {
                "max_logprob_difference": float(((ref - plain) * mask).abs().max()),
                "answer_tokens": int(mask.sum()),
                "local_elements": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params),
                "full_elements": sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in params),
            }
            self.network = weakref.ref(ctx.reference.model)
        elif "freed" not in self.seen:
            gc.collect()
            self.seen["freed"] = not ctx.reference.loaded and self.network() is None
            # the optimiser updates the float32 shards themselves, no second fp32 copy of them
            module = getattr(ctx.model, "module", ctx.model)  # under DeepSpeed: its engine
            (opt,) = [o for o in gc.get_objects() if isinstance(o, Stage3) and o.module is module]
            pairs = list(zip(opt.fp32_partitioned_groups_flat, opt.fp16_partitioned_groups_flat, strict=True))
            self.seen["master_is_shard"] = bool(pairs) and all(a is b for a, b in pairs)
        return -ctx.nll("forget")


def main(model: str, data: str, out: str) -> None:
    host = get_host()
    probe = ReferenceProbe(model)
    host.register(probe, "zero-probe")
    losses = sorted(name for name, m in host.methods.items() if m.kind == "loss" and name != "zero-probe")
    npo_kl = {"npo": {"retain_nll_weight": 0, "retain_kl_weight": 1}}
    cases = [(name, [], {}, 2) for name in losses]
    cases += [("npo", ["lora"], npo_kl, 2), ("zero-probe", [], {}, 2), ("npo", [], npo_kl, 1)]
    cases += [("npo", [], npo_kl, 3)]  # with reference.kl = "cached" (3: a step after its rows are in)
    deepspeeds_own = Stage3._create_fp32_partitions  # before the trainer makes it compare devices
    results = []

    def one(label: str, stage: int, name: str, with_: list[str], settings: dict, steps: int, reference=None) -> None:
        config = RunConfig.model_validate(
            {
                "model": model,
                "data": data,
                "method": name,
                "with": with_,
                "config": settings,
                "output_dir": str(Path(out) / label),
                "deepspeed": f"zero{stage}",
                "seed": 3,
                "reference": reference or {},
                "trainer": {"max_steps": steps, "batch_size": 2, "learning_rate": 1e-3, "progress": False},
            }
        )
        try:
            report = json.loads((run(config, host=host) / "unlearn_run.json").read_text())
            results.append({"case": label, "ok": True, "train_loss": report["train"]["train_loss"], **report})
        except Exception:  # noqa: BLE001 - recorded for the test to report
            results.append({"case": label, "ok": False, "error": traceback.format_exc()[-2000:]})

    for stage in (2, 3):
        for name, with_, settings, steps in cases:
            if stage == 2 and (name == "zero-probe" or steps != 2 or (name not in ZERO2 and not with_)):
                continue
            if steps == 3:
                one(f"zero{stage}-npo-kl-cached", stage, name, with_, settings, steps, {"kl": "cached"})
                continue
            label = f"zero{stage}-{name}" + "".join(f"+{w}" for w in with_) + ("-kl-first-step" if steps == 1 else "")
            one(label, stage, name, with_, settings, steps)
    # GD again with DeepSpeed's own second fp32 copy of each shard (marked so the trainer keeps it)
    deepspeeds_own.compares_devices = True
    Stage3._create_fp32_partitions = deepspeeds_own
    one("zero3-gd-deepspeed-copy", 3, "gd", [], {}, 2)
    rank = torch.distributed.get_rank()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"cases": results, "reference": probe.seen}, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:4])
