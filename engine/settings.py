"""The settings of one run (``RunConfig``: the trainer's, the reference model's, the alternate
answers'), read from TOML/YAML/JSON and overridden from the command line. Unknown keys and bad
values are errors that name the field."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from unlearn.config import Config, search
from unlearn.errors import ConfigError


class TrainerSettings(Config):
    """Optimisation settings shared by every method (the HF ``Trainer`` arguments we expose)."""

    epochs: float = Field(1.0, gt=0, description="Passes over the forget set.", json_schema_extra=search(1, 12, step=1))
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimiser steps (-1: use epochs; not 0).")
    learning_rate: float = Field(
        1e-5,
        gt=0,
        description="Peak learning rate (SemEval baseline 1e-5).",
        json_schema_extra=search(1e-5, 3e-3, log=True),
    )
    batch_size: int = Field(
        4, ge=1, description="Forget examples per device per step; each is paired with a retain example."
    )
    gradient_accumulation_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    lr_scheduler: str = Field("constant", description="Any HF scheduler name: constant, linear, cosine, ...")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (0 disables).")
    max_length: int = Field(512, ge=8, description="Tokens per example; longer prompts are cut from the left.")
    append_eos: bool = Field(True, description="End every answer with EOS, so the model learns where answers stop.")
    retain_sampling: Literal["cycle", "random"] = Field(
        "cycle",
        description="cycle: walk a seeded permutation of the retain set, continuing across epochs so all "
        "of it is seen; random: draw a fresh seeded retain example for each forget example every epoch.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Compute dtype; the saved model is written in it. With precision = 'mixed' the weights "
        "being trained stay float32 (autocast, or DeepSpeed's bf16/fp16 section keeps float32 master weights).",
    )
    precision: Literal["mixed", "pure"] = Field(
        "mixed",
        description="mixed: float32 master weights, dtype compute; pure: the weights themselves in dtype "
        "(half the memory, but small updates round away).",
    )
    gradient_checkpointing: bool = False
    backward: Literal["joint", "per-term"] = Field(
        "joint",
        description="joint: one backward pass over the loss. per-term: each LossOutput.add_term term's new forward "
        "pass first backpropagates what came before it (less memory, same gradients summed in another order; "
        "not under DeepSpeed).",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto (the GPU when there is one), cpu, cuda or cuda:N; applied through "
        "CUDA_VISIBLE_DEVICES. Under torchrun each rank takes its own GPU (auto or cuda).",
    )
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(
        0, ge=0, description="Checkpoint every N steps so a crashed run resumes (0: only at the end of each epoch)."
    )
    progress: bool = Field(True, description="Show progress bars.")
    eval_steps: int = Field(
        0,
        ge=0,
        description="Every N steps compute the benchmark's cheap signals of the model being trained (answer "
        "NLLs, the LOSS-attack AUC) on eval_split; also at step 0. 0: never.",
    )
    score_steps: int = Field(
        0, ge=0, description="Every M steps also the generation-based signals (LUME: the official score). 0: never."
    )
    eval_benchmark: str = Field("lume", description="The benchmark whose signals are computed (its data: `data`).")
    eval_split: Literal["validation", "train"] = Field(
        "validation", description="validation: the held-out rows of `data`; train: the rows being unlearned."
    )
    eval_rows: int = Field(64, ge=1, description="At most this many rows (and documents) per file for the signals.")
    stop_when: list[str] = Field(
        default_factory=list,
        description="Stop at the first evaluation where one of these holds, e.g. 'abs(mia_auc - 0.5) <= 0.05', "
        "'forget_nll >= nonmember_nll', 'retain_nll > 1.5 * initial_retain_nll' (initial_: the input model's).",
    )
    best_by: str | None = Field(
        None,
        description="Keep the model of the evaluated step that is best by this expression of the signals (e.g. "
        "'mia_score', 'score'), checkpointed when reached, instead of the last step.",
    )
    best_mode: Literal["max", "min"] = Field("max", description="Whether best_by is best at its largest or smallest.")
    tensorboard: bool = Field(
        False, description="Write TensorBoard event files (loss, terms, signals) into the output's tensorboard/."
    )

    @field_validator("max_steps")
    @classmethod
    def _some_steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 steps would train nothing; give at least 1, or -1 to use epochs")
        return value

    @field_validator("stop_when")
    @classmethod
    def _conditions(cls, value: list[str]) -> list[str]:
        from .monitor import Expression

        for i, text in enumerate(value):
            Expression(text, f"item {i}")  # a bad expression is an error naming the field and item
        return value

    @field_validator("best_by")
    @classmethod
    def _criterion(cls, value: str | None) -> str | None:
        from .monitor import Expression

        if value is not None:
            Expression(value, "expression")
        return value

    @model_validator(mode="after")
    def _signals_measured(self) -> TrainerSettings:
        if (self.stop_when or self.best_by) and not (self.eval_steps or self.score_steps):
            raise ValueError("stop_when and best_by read the signals: set eval_steps (or score_steps) too")
        return self


class ReferenceSettings(Config):
    """How the frozen input model (the reference of KL, NPO, SHA256, RMU) is used."""

    kl: Literal["exact", "cached", "top-k"] = Field(
        "exact",
        description="exact: KL over the whole vocabulary, a reference forward pass every step; cached: the same "
        "KL from the reference's whole next-token distribution at each answer position, computed once per row "
        "and held on the CPU (answer tokens x vocabulary x 4 bytes a row: less than the reference's weights "
        "only for a small vocabulary or retain set); top-k: the reference's top_k tokens per answer position "
        "plus one bucket for the rest, computed once per row (a lower bound of the exact KL, "
        "`unlearn.losses.topk_kl_divergence`). With cached or top-k no reference model is kept once the rows are in.",
    )
    top_k: int = Field(32, ge=1, description="Tokens per position kept for kl = 'top-k'.")
    prefill: bool = Field(
        True,
        description="Compute the cached reference outputs (label log-probs, top-k, cached KL) of a whole split "
        "before the first backward pass, and free the reference model once nothing else needs it; only for "
        "splits the run draws at least as many rows of as they hold.",
    )


class AlternateSettings(Config):
    """Where the alternate answers come from for methods that learn one in place of the forgotten
    answer (DPO/IdkDPO, IdkNLL, AltPO, ReLearn); see ``unlearn.engine.alternates``."""

    source: Literal["auto", "rows", "refusals", "rewrite"] = Field(
        "auto",
        description="auto: refusals for a method that wants them; for one that wants rewrites, each forget "
        "row's own `alternate` where it has one, else a rewrite. rows: every forget row must carry `alternate`. "
        "refusals / rewrite: that source for every row.",
    )
    refusals: Path | None = Field(
        None,
        description="A refusal file, one answer per line as plain text or a JSON string (TOFU's "
        "idontknow.jsonl works); default: the built-in list of 119 written for this project.",
    )
    per_row: int | None = Field(
        None,
        ge=1,
        description="Alternates per forget row; each (row, alternate) pair is one training item, so an epoch "
        "sees every forget row per_row times. None: the method's own default (AltPO: 5).",
    )


class RunConfig(Config):
    """One unlearning run: which model, which data, which plugins, how to train, where to write."""

    model: str = Field(description="Path of the Hugging Face model folder to unlearn (never modified).")
    tokenizer: str | None = Field(None, description="Tokenizer folder, if not the model's.")
    data: Path | None = Field(None, description="A folder holding forget.jsonl and retain.jsonl (or .parquet).")
    forget: Path | None = Field(None, description="Forget rows (jsonl/parquet file or folder); overrides data.")
    retain: Path | None = Field(None, description="Retain rows (jsonl/parquet file or folder); overrides data.")
    method: str = Field(description="The loss method: one registered method of kind 'loss'.")
    with_: list[str] = Field(
        default_factory=list,
        alias="with",
        description="Parameter-selection and post-processing methods, applied in order.",
    )
    config: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-method settings, e.g. config.gd.retain_weight = 2."
    )
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    reference: ReferenceSettings = Field(default_factory=ReferenceSettings)
    alternate: AlternateSettings = Field(default_factory=AlternateSettings)
    seed: int = 42
    output_dir: Path = Field(description="Where the unlearned model is written (atomically).")
    deepspeed: Path | dict[str, Any] | None = Field(
        None, description="Run under DeepSpeed: a JSON config file, a table, or a preset zero0..zero3."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    @field_validator("with_")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise ValueError(f"listed twice: {dupes}")
        return value

    @model_validator(mode="after")
    def _has_data(self) -> RunConfig:
        if self.forget is None and self.data is None:
            raise ValueError("give the forget rows with `forget` or a folder with `data`")
        return self

    def methods(self) -> list[str]:
        """The chosen methods: the loss method, then the --with methods."""
        return [self.method, *self.with_]

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def describe_error(exc: ValidationError, prefix: str = "", source: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "with_") or "(top level)"
        loc = f"{prefix}.{loc}" if prefix and loc != "(top level)" else (prefix or loc)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        if err["type"] != "missing" and "input" in err and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        lines.append(f"{loc}: {msg}")
    where = f"{source}: " if source else ""
    return where + "; ".join(lines)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON run config into a plain dict."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config format (use .toml, .yaml or .json)")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of settings")
    base = path.parent
    for key in ("model", "tokenizer", "data", "forget", "retain", "output_dir", "deepspeed"):
        value = data.get(key)
        preset = key == "deepspeed" and re.fullmatch(r"zero[0-3]", str(value)) and not (base / str(value)).exists()
        if isinstance(value, str) and value and not Path(value).is_absolute() and not preset:
            data[key] = str(base / value)  # paths in a file are relative to the file
    refusals = data.get("alternate", {}).get("refusals") if isinstance(data.get("alternate"), dict) else None
    if isinstance(refusals, str) and refusals and not Path(refusals).is_absolute():
        data["alternate"]["refusals"] = str(base / refusals)
    return data


def parse_value(text: str, flag: str = "--set") -> Any:
    """A ``--set`` value: a TOML literal if it parses (1e-5, true, [1, 2], "x"), else a string; a
    value that starts like a quoted string, list or table but does not parse is an error naming
    ``flag`` (the option it came from)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if text[:1] in "\"'[{":
            raise ConfigError(f"{flag} value {text}: not valid TOML ({exc}); write a regex as 'a\\.b'") from None
        return text


def apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c = value`` inside nested dicts, creating tables as needed; a number picks an
    item of a list (``runs.0.trainer.epochs``)."""
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"--set {dotted}: {key!r} is not an item of a list of {len(node)}")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {keys[i - 1]!r} is a value, not a table")
        if last:
            node[key] = value
        else:
            node = node.setdefault(key, {})


def apply_sets(data: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Apply the command line's ``--set KEY=VALUE`` items to ``data`` (dotted keys reach into
    tables, numbers into lists); returns ``data``."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. trainer.learning_rate=1e-5")
        apply_override(data, key.strip(), parse_value(value.strip()))
    return data


def build_config(data: dict[str, Any], source: str = "") -> RunConfig:
    """Validate a plain dict into a RunConfig, with errors naming the field (and the file)."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, source=source)) from None
