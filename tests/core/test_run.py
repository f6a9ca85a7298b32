"""Runs on a real tiny model: composition, reference log-probs, NaN guard, atomic output, resume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import CrashOnce, cli, run_args
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import ConfigError, DataError, LossContext, RunError, encode, hookimpl, token_logprobs
from unlearn.devkit import FORGET_ROWS
from unlearn.engine import NonFiniteLossError, PluginError, RunConfig, run


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


class Recorder:
    """An inline plugin providing one entry of each kind and recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @hookimpl
    def register_methods(self, register: Callable[..., None]) -> None:
        register("rec-loss", config=Empty, kind="loss", uses_retain=True)
        register("rec-head-only", config=Empty, kind="parameters")
        register("rec-stamp", config=Empty, kind="post-process")

    @hookimpl
    def compute_loss(self, method, config, ctx: LossContext):
        self.calls.append(("compute_loss", method))
        assert set(ctx.batch) == {"forget", "retain"}
        return -ctx.nll("forget") + ctx.nll("retain")

    # One package, several entries: each hook is told which entry it is called for.
    @hookimpl
    def select_parameters(self, method, config, model, run):
        self.calls.append(("select_parameters", method))
        if method == "rec-head-only":
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith("lm_head"))

    @hookimpl
    def post_process(self, method, config, output_dir, run):
        self.calls.append(("post_process", method))
        if method == "rec-stamp":
            (output_dir / "stamp.txt").write_text(run.config.method)


class Bystander:
    """Installed but not chosen: none of its hooks may run."""

    called = False

    @hookimpl
    def register_methods(self, register):
        register("bystander", config=Empty, kind="parameters")

    @hookimpl
    def select_parameters(self, method, config, model, run):
        Bystander.called = True

    @hookimpl
    def post_process(self, method, config, output_dir, run):
        Bystander.called = True


def test_composed_run_calls_only_the_chosen_plugins(host, make_config, tiny_model):
    rec = Recorder()
    host.register(rec, "recorder")
    host.register(Bystander(), "bystander")
    cfg = make_config(method="gd", **{"with": ["rec-head-only", "rec-stamp"]})
    out = run(cfg, host=host)
    assert ("select_parameters", "rec-head-only") in rec.calls
    assert ("post_process", "rec-stamp") in rec.calls
    assert not any(m == "rec-loss" for _, m in rec.calls)  # not chosen as the method
    assert not Bystander.called
    assert (out / "stamp.txt").read_text() == "gd"
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"lm_head.weight"}


def test_inline_loss_method_is_called_every_step(host, make_config):
    rec = Recorder()
    host.register(rec, "recorder")
    run(make_config(method="rec-loss", trainer={"max_steps": 3}), host=host)
    assert rec.calls.count(("compute_loss", "rec-loss")) == 3


def test_run_checks_kinds_and_needs(host, make_config, tiny_data):
    host.register(Recorder(), "recorder")
    with pytest.raises(PluginError, match="'rec-stamp' is a post-process method; expected loss"):
        run(make_config(method="rec-stamp"), host=host)
    with pytest.raises(ConfigError, match="method 'gd' needs a retain set"):
        run(make_config(data=None, forget=str(tiny_data / "forget.jsonl")), host=host)


class ReferenceProbe:
    """Checks reference log-probs equal the model's own at the start, and are cached."""

    def __init__(self) -> None:
        self.diffs: list[float] = []

    @hookimpl
    def register_methods(self, register):
        register("refprobe", config=Empty, kind="loss", uses_retain=False)

    @hookimpl
    def compute_loss(self, method, config, ctx: LossContext):
        ref = ctx.reference_token_logprobs("forget")
        logp, mask = ctx.token_logprobs("forget")
        self.diffs.append(float(((logp.detach() - ref) * mask).abs().max()))
        kl = ctx.reference_logits("forget")
        assert not kl.requires_grad
        return -ctx.nll("forget")


def test_reference_log_probs_are_computed_once_and_cached(host, make_config):
    probe = ReferenceProbe()
    host.register(probe, "refprobe")
    cfg = make_config(method="refprobe", trainer={"max_steps": 6, "batch_size": 3, "learning_rate": 1e-2})
    from unlearn.engine import runner as run_module

    loads = []
    original = run_module.load_input_model
    run_module.load_input_model = lambda c: loads.append(1) or original(c)
    try:
        run(cfg, host=host)
    finally:
        run_module.load_input_model = original
    assert len(loads) == 2  # the trained model, and the reference once for the whole run
    assert probe.diffs[0] < 1e-5  # before any update the reference is the model itself
    assert probe.diffs[-1] > 1e-3  # later the trained model moved away from the cached reference


class CachedOnly:
    """Uses only cached reference outputs (NPO's label log-probs, or top-k KL) and records, at
    each step, whether a reference network is in memory and how many reference passes ran."""

    def __init__(self, kl: bool = False, logits: bool = False) -> None:
        self.kl, self.logits = kl, logits
        self.seen: list[tuple[bool, int]] = []
        self.kls: list[float] = []

    @hookimpl
    def register_methods(self, register):
        register("cached-only", config=Empty, kind="loss", uses_retain=True)

    @hookimpl
    def compute_loss(self, method, config, ctx: LossContext):
        self.seen.append((ctx.reference.loaded, ctx.reference.forward_passes))
        ref = ctx.reference_token_logprobs("forget")
        logp, mask = ctx.token_logprobs("forget")
        loss = -((logp - ref) * mask).sum() / mask.sum()
        if self.kl:
            kl = ctx.kl_to_reference("retain")
            self.kls.append(float(kl.detach()))
            loss = loss + kl
        if self.logits:
            ctx.reference_logits("retain")
        return loss


F, T = False, True


@pytest.mark.parametrize(
    ("settings", "logits", "loaded", "passes"),
    [
        # the forget split (6 rows, batches of 2) computed whole at step 0, then the model freed
        ({}, F, [F] * 8, [0] + [3] * 7),
        ({"kl": "top-k", "top_k": 4}, F, [F] * 8, [0] + [6] * 7),  # and the retain rows' top-k
        ({"kl": "cached"}, F, [F] * 8, [0] + [6] * 7),  # or their whole distributions (exact KL)
        # rows computed as they come: the model is freed once every row has come (3 steps)
        ({"prefill": False}, F, [F, T, T] + [F] * 5, [0, 1, 2] + [3] * 5),
        ({}, T, [F] + [T] * 7, None),  # full logits every step: the model stays
    ],
    ids=["logprobs", "top-k-kl", "cached-kl", "no-prefill", "logits"],
)
def test_a_reference_needed_only_for_cached_outputs_is_freed_before_training(
    host, make_config, settings, logits, loaded, passes
):
    probe = CachedOnly(kl="kl" in settings, logits=logits)
    host.register(probe, "cached")
    # 8 steps of 2 rows draw 16 >= 6 rows of each split, so a split is computed whole at its first use
    trainer = {"max_steps": 8, "batch_size": 2, "learning_rate": 1e-2}
    run(make_config(method="cached-only", reference=settings, trainer=trainer), host=host)
    assert [s[0] for s in probe.seen] == loaded
    if passes is not None:
        assert [s[1] for s in probe.seen] == passes  # reference forward passes before each step
    if probe.kls:
        assert abs(probe.kls[0]) < 1e-5  # the model is the reference at step 0
        assert probe.kls[-1] > 1e-4


def test_cached_kl_is_the_exact_kl_bit_for_bit(tiny_model: Path, tiny_data: Path):
    """The reference's cached distributions give the exact KL's bits (on the batch that filled
    them), without the reference's logits; and a run with them follows the exact KL's run."""
    from unlearn import PairCollator, load_rows
    from unlearn.engine import CachedReference, ReferenceSettings, kl_divergence, kl_from_logprobs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    rows = encode(load_rows(tiny_data / "retain.jsonl", "retain")[:3], tokenizer, max_length=64)
    part = PairCollator(tokenizer.pad_token_id or 0).pad(list(enumerate(rows)))
    reference = CachedReference(
        lambda: AutoModelForCausalLM.from_pretrained(tiny_model), ReferenceSettings(kl="cached")
    )
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)  # the trained model has moved away from the reference
        inputs = {"input_ids": part["input_ids"], "attention_mask": part["attention_mask"]}
        exact = kl_divergence(reference.model(**inputs).logits, model(**inputs).logits, part["labels"])
        cached = kl_from_logprobs(reference.answer_logprobs("retain", part), model(**inputs).logits, part["labels"])
    assert float(exact) > 1e-3
    assert torch.equal(cached, exact)
    answers = int((part["labels"][:, 1:] != -100).sum())
    assert sum(v.shape[0] for (v,) in reference._full.values()) == answers  # one distribution per answer token


def test_cached_kl_says_when_it_outweighs_the_reference(tiny_model: Path, tiny_data: Path, caplog):
    from unlearn import PairCollator, load_rows
    from unlearn.engine import CachedReference, ReferenceSettings

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = encode(load_rows(tiny_data / "retain.jsonl", "retain"), tokenizer, max_length=64)
    part = PairCollator(tokenizer.pad_token_id or 0).pad(list(enumerate(rows[:2])))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    weights = 4 * sum(p.numel() for p in model.parameters())
    per_copy = 4 * model.config.vocab_size * sum(sum(label != -100 for label in r.labels[1:]) for r in rows)
    assert per_copy < weights < 10 * per_copy
    for copies, warned in ((1, False), (10, True)):  # the run's split: its rows, or ten times as many
        caplog.clear()
        reference = CachedReference(
            lambda: AutoModelForCausalLM.from_pretrained(tiny_model), ReferenceSettings(kl="cached")
        )
        reference.rows = {"retain": rows * copies}
        reference.answer_logprobs("retain", part)
        assert ("more than its" in caplog.text) == warned, caplog.text


def test_a_cached_kl_run_follows_the_exact_one(host, make_config, tmp_path: Path):
    probe, kls = CachedOnly(kl=True), {}
    host.register(probe, "cached")
    for kl in ("exact", "cached"):
        probe.kls = []
        trainer = {"max_steps": 6, "batch_size": 2, "learning_rate": 1e-2}
        config = make_config(method="cached-only", reference={"kl": kl}, trainer=trainer, output_dir=str(tmp_path / kl))
        run(config, host=host)
        kls[kl] = probe.kls
    assert kls["exact"][-1] > 1e-4
    # the cache was filled from batches padded otherwise than the run's: float rounding, not more
    assert kls["cached"] == pytest.approx(kls["exact"], rel=1e-3, abs=1e-7)


def test_top_k_kl_is_the_kl_over_the_top_k_and_the_rest():
    from unlearn.engine import kl_divergence, topk_kl_divergence

    ref_logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]]])  # [B=1, T=2, V=4]
    logits = torch.tensor([[[0.5, 1.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 1]])  # one answer position: position 0 predicts token 1
    ref, theta = torch.log_softmax(ref_logits[0, 0], -1), torch.log_softmax(logits[0, 0], -1)
    p, q = ref.exp(), theta.exp()
    # k = 2: the outcomes {0}, {1} and {2, 3}, by hand
    by_hand = sum(p[i] * (ref[i] - theta[i]) for i in (0, 1)) + (p[2] + p[3]) * ((p[2] + p[3]) / (q[2] + q[3])).log()
    top2 = topk_kl_divergence(*ref[None, None].topk(2, -1), logits, labels)
    assert float(top2) == pytest.approx(float(by_hand), rel=1e-5)
    exact = kl_divergence(ref_logits, logits, labels)
    assert float(topk_kl_divergence(*ref[None, None].topk(4, -1), logits, labels)) == pytest.approx(
        float(exact), rel=1e-5
    )
    assert 0 < float(top2) < float(exact)  # merging outcomes lowers a KL


class NaNLoss:
    @hookimpl
    def register_methods(self, register):
        register("nan", config=Empty, kind="loss", uses_retain=False)

    @hookimpl
    def compute_loss(self, method, config, ctx):
        return ctx.nll("forget") * float("nan")


def test_nan_loss_stops_with_a_clear_error_and_writes_nothing(host, make_config, tiny_model):
    host.register(NaNLoss(), "nan")
    cfg = make_config(method="nan")
    before = _digest(tiny_model)
    with pytest.raises(
        NonFiniteLossError, match=r"the loss of method 'nan' became nan at step 0.*no model was written"
    ):
        run(cfg, host=host)
    assert not cfg.output_dir.exists()
    assert _digest(tiny_model) == before


def test_input_model_is_never_modified_and_output_is_complete(host, make_config, tiny_model):
    before = _digest(tiny_model)
    cfg = make_config(method="ga", trainer={"max_steps": 3, "learning_rate": 1e-2})
    out = run(cfg, host=host)
    assert _digest(tiny_model) == before
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "unlearn_config.json", "unlearn_run.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    assert not list(out.parent.glob(".out.*"))  # staging folders are gone
    AutoModelForCausalLM.from_pretrained(out)


def test_output_and_input_overlap_and_existing_output_are_refused(host, make_config, tiny_model):
    with pytest.raises(ConfigError, match="overlaps the input"):
        run(make_config(output_dir=str(tiny_model / "sub")), host=host)
    cfg = make_config(method="ga")
    run(cfg, host=host)
    with pytest.raises(ConfigError, match="already holds a model; pass --overwrite"):
        run(cfg, host=host)
    run(cfg, host=host, overwrite=True)


def test_a_crashed_run_resumes_from_its_last_checkpoint(host, make_config):
    host.register(CrashOnce(), "crashy")
    cfg = make_config(method="crashy", trainer={"max_steps": 5, "save_steps": 1, "batch_size": 2})
    with pytest.raises(KeyboardInterrupt):
        run(cfg, host=host)
    assert not cfg.output_dir.exists()
    changed = make_config(method="crashy", trainer={"max_steps": 5, "save_steps": 1, "batch_size": 3})
    with pytest.raises(RunError, match="unfinished run with a different config"):
        run(changed, host=host)
    out = run(cfg, host=host)
    report = json.loads((out / "unlearn_run.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-3")
    assert report["train"]["train_loss"] is not None


def test_cli_nan_exit_code(tmp_path, tiny_model, tiny_data):
    # A learning rate this large makes GA's logits overflow within a few steps.
    res = cli(
        *run_args(
            tiny_model,
            tiny_data,
            tmp_path / "o",
            "--lr",
            "1e30",
            "--max-steps",
            "20",
            "--set",
            "trainer.max_grad_norm=0",
            "--set",
            "trainer.progress=false",
            method="ga",
        )
    )
    assert res.returncode == 1, res.stderr
    assert "error: the loss of method 'ga' became" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


class Scheduler:
    """Supplies its own order: forget rows backwards, then one retain batch; records what it sees."""

    def __init__(self, mixed: bool = False) -> None:
        self.seen: list[tuple[str, list[int]]] = []
        self.mixed = mixed

    @hookimpl
    def register_methods(self, register):
        register("ordered", config=Empty, kind="loss", uses_retain=True)

    @hookimpl
    def schedule(self, method, config, forget, retain, seed, batch_size):
        items = [{"forget": (i, forget[i])} for i in reversed(range(len(forget)))]
        items += [{"retain": (j, retain[j])} for j in range(batch_size)]
        if self.mixed:
            items.insert(1, {"retain": (0, retain[0])})
        return items

    @hookimpl
    def compute_loss(self, method, config, ctx: LossContext):
        split = "forget" if ctx.has("forget") else "retain"
        self.seen.append((split, ctx.batch[split]["index"].tolist()))
        return ctx.nll(split)


def test_a_method_schedule_is_followed_in_order(host, make_config):
    scheduler = Scheduler()
    host.register(scheduler, "scheduler")
    run(make_config(method="ordered", trainer={"max_steps": -1, "epochs": 1, "batch_size": 2}), host=host)
    assert scheduler.seen == [("forget", [5, 4]), ("forget", [3, 2]), ("forget", [1, 0]), ("retain", [0, 1])]


def test_a_schedule_that_mixes_splits_in_a_batch_is_refused(host, make_config):
    host.register(Scheduler(mixed=True), "scheduler")
    with pytest.raises(DataError, match=r"method 'ordered' scheduled items 0..1 with different splits"):
        run(make_config(method="ordered", trainer={"batch_size": 2}), host=host)


def test_a_run_that_barely_changed_the_model_says_so(tmp_path, memorised_model, tiny_data, host, caplog):
    common = ["run", "--model", str(memorised_model), "--data", str(tiny_data), "--method", "gd", "--max-steps", "2"]
    common += ["--set", "trainer.progress=false"]
    still = cli(*common, "-o", str(tmp_path / "still"), "--lr", "1e-9")
    assert still.returncode == 0, still.stderr
    assert "the model barely changed" in still.stderr and "Raise trainer.learning_rate" in still.stderr
    probe = json.loads((tmp_path / "still" / "unlearn_run.json").read_text())["forget_probe"]
    assert probe["rows"] == 6 and probe["before"]["reproduces"] == probe["after"]["reproduces"] == 6
    assert "reproduces 6 of the 6 probed forget answers (before: 6)" in still.stderr
    config = {
        "model": str(memorised_model),
        "data": str(tiny_data),
        "method": "gd",
        "output_dir": str(tmp_path / "moved"),
    }
    run(
        RunConfig.model_validate({**config, "trainer": {"max_steps": 2, "learning_rate": 1e-2, "progress": False}}),
        host=host,
    )
    assert "barely changed" not in caplog.text
    probe = json.loads((tmp_path / "moved" / "unlearn_run.json").read_text())["forget_probe"]

    @torch.no_grad()
    def direct(folder: Path) -> dict[str, float]:  # one row at a time: NLL of every answer token, and greedy
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        total = count = reproduced = 0.0
        for example in encode(FORGET_ROWS, tokenizer, 512):
            ids = torch.tensor([example.input_ids])
            logp, mask = token_logprobs(model(input_ids=ids).logits, torch.tensor([example.labels]))
            total, count = total - float((logp * mask).sum()), count + float(mask.sum())
            prompt = len(example.labels) - int(mask.sum())
            answer = example.input_ids[prompt:]
            generated = model.generate(ids[:, :prompt], max_new_tokens=len(answer), do_sample=False)[0, prompt:]
            reproduced += generated.tolist() == answer
        return {"nll": total / count, "reproduces": reproduced}

    for name, folder in (("before", memorised_model), ("after", tmp_path / "moved")):
        expected = direct(folder)
        assert probe[name]["nll"] == pytest.approx(expected["nll"], rel=1e-5)
        assert probe[name]["reproduces"] == expected["reproduces"]
    assert probe["after"]["reproduces"] < probe["before"]["reproduces"]


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("method", "extra"),
    [("npo", ("--with", "lora", "--set", "config.lora.save=adapter")), ("rmu", ())],
    ids=["npo+lora", "rmu"],
)
def test_gradient_checkpointing_changes_nothing_but_memory(tmp_path, tiny_model, tiny_data, method, extra):
    """The installed plugins with activation checkpointing: the same weights as without it (LoRA's
    adapter-off reference and RMU's hidden-state hook included), and the weights did move (LoRA:
    only the adapter is saved, and its zero-initialised B matrices trained)."""
    weights = {}
    for flag in ("true", "false"):
        out = tmp_path / flag
        res = cli(
            *run_args(
                tiny_model,
                tiny_data,
                out,
                *extra,
                "--max-steps",
                "3",
                "--lr",
                "1e-2",
                "--seed",
                "3",
                "--set",
                f"trainer.gradient_checkpointing={flag}",
                "--set",
                "trainer.progress=false",
                method=method,
            )
        )
        assert res.returncode == 0, res.stderr[-2000:]
        saved = "adapter_model.safetensors" if "lora" in extra else "model.safetensors"
        assert sorted(p.name for p in out.glob("*.safetensors")) == [saved]
        weights[flag] = load_file(out / saved)
    assert all(torch.equal(weights["true"][k], weights["false"][k]) for k in weights["false"])
    if "lora" in extra:
        assert any(bool(w.abs().sum() > 0) for k, w in weights["true"].items() if "lora_B" in k)
    else:
        before = load_file(tiny_model / "model.safetensors")
        assert any(not torch.equal(weights["true"][k], before[k]) for k in before)


class DtypeProbe:
    """A loss method that records the dtype of the trained weights and of the computation (the
    output of the LM head inside the forward pass: accelerate casts a model's outputs back to
    float32 under autocast, so the logits it returns would not tell)."""

    def __init__(self) -> None:
        self.seen: set[tuple[torch.dtype, torch.dtype]] = set()
        self.computed: list[torch.dtype] = []

    @hookimpl
    def register_methods(self, register: Callable[..., None]) -> None:
        register("dtype-probe", config=Empty, kind="loss")

    @hookimpl
    def compute_loss(self, method, config, ctx: LossContext):
        head = ctx.model.get_output_embeddings()
        handle = head.register_forward_hook(lambda _m, _i, out: self.computed.append(out.dtype))
        try:
            loss = -ctx.nll("forget")
        finally:
            handle.remove()
        self.seen.add((next(ctx.model.parameters()).dtype, self.computed[-1]))
        return loss


@pytest.mark.parametrize(
    ("dtype", "precision", "weights", "compute"),
    [
        ("bfloat16", "mixed", torch.float32, torch.bfloat16),
        ("bfloat16", "pure", torch.bfloat16, torch.bfloat16),
        ("float32", "mixed", torch.float32, torch.float32),
    ],
)
def test_mixed_precision_keeps_float32_master_weights(host, make_config, dtype, precision, weights, compute):
    probe = DtypeProbe()
    host.register(probe, "dtype-probe")
    out = run(make_config(method="dtype-probe", trainer={"dtype": dtype, "precision": precision}), host=host)
    assert probe.seen == {(weights, compute)}
    report = json.loads((out / "unlearn_run.json").read_text())
    assert report["optimiser_dtype"] == [str(weights)]  # the optimiser steps the master weights
    assert report["device"] == "cpu" and report["compute_dtype"] == dtype
    saved = load_file(out / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {getattr(torch, dtype)}  # written in the dtype asked for


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only refusal")
def test_mixed_precision_that_needs_a_gpu_is_refused_in_one_line(host, make_config):
    with pytest.raises(ConfigError, match=r"trainer.dtype = 'float16': mixed precision here needs a GPU"):
        run(make_config(trainer={"dtype": "float16"}), host=host)
    with pytest.raises(ConfigError, match="DeepSpeed's bf16 mode"):
        run(make_config(trainer={"dtype": "bfloat16"}, deepspeed="zero2"), host=host)


def test_the_optimiser_state_is_dropped_through_its_wrappers_before_the_final_save():
    """Adam's moments (twice the trained weights) are freed once training is over, through
    accelerate's wrapper (and DeepSpeed's, the same ``.optimizer`` chain), so that the final save,
    which under ZeRO-3 gathers the model on rank 0, does not add a model's worth on top of them."""
    from accelerate import Accelerator

    from unlearn.engine.runner import release_optimizer_state

    model = torch.nn.Linear(4, 4)
    model, adam = Accelerator(cpu=True).prepare(model, torch.optim.AdamW(model.parameters()))
    model(torch.randn(2, 4)).sum().backward()
    adam.step()
    inner = adam.optimizer
    assert len(inner.state) == 2 and "exp_avg" in inner.state[model.weight]
    release_optimizer_state(adam)
    assert len(inner.state) == 0 and inner.param_groups[0]["params"][0] is model.weight  # groups stay
