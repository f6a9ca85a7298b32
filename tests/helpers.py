"""Helpers for tests that drive the installed command line and pip, as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from unlearn import Config, hookimpl

REPO = Path(__file__).resolve().parents[1]
# A target network that memorises the tiny benchmark in seconds (the default is sized for `small`).
SMALL_NET = {"hidden_size": 96, "intermediate_size": 384, "layers": 2, "vocab_size": 1200}


# A SemEval-style submission (organiser mode) that hands in the target unchanged.
COPY_SUBMISSION = """
import os, shutil
def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    for f in os.listdir(input_model_path):
        shutil.copy(os.path.join(input_model_path, f), output_dir)
"""


def processes_with(text: str) -> list[int]:
    """The pids of this machine's processes whose command line holds ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            pass
    return found


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run the installed `unlearn` command in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "unlearn", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


def undistributed_env() -> dict[str, str]:
    """The test process's environment without its distributed variables (a launcher's own run)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    }


def launch(
    *args: str, nproc: int | None = None, script: Path | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    """``python -m unlearn ARGS`` (or ``python SCRIPT ARGS``), under ``torchrun`` with ``nproc``
    processes if given, in an environment with none of the test process's distributed variables."""
    env = undistributed_env()
    launcher = [sys.executable]
    if nproc is not None:
        from unlearn.engine import free_port

        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
        assert torchrun, "torchrun is installed with torch"
        launcher = [torchrun, "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
    return subprocess.run(
        [*launcher, *([str(script)] if script else ["-m", "unlearn"]), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )


def run_args(model: Path, data: Path, out: Path, *extra: str, method: str = "gd") -> list[str]:
    """``unlearn run`` arguments for ``method`` on ``model`` and ``data`` into ``out``, then ``extra``."""
    return ["run", "--model", str(model), "--data", str(data), "--method", method, "-o", str(out), *extra]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def write_plugin_package(
    root: Path, name: str, module_source: str, entry: str | None = None, dependencies: tuple[str, ...] = ()
) -> Path:
    """A pip-installable plugin package ``unlearn-plugin-NAME`` whose entry point is ``entry`` (default NAME)."""
    pkg = root / name
    (pkg / f"unlearn_plugin_{name}").mkdir(parents=True)
    (pkg / f"unlearn_plugin_{name}" / "__init__.py").write_text(module_source)
    deps = f"dependencies = {list(dependencies)!r}\n".replace("'", '"') if dependencies else ""
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "unlearn-plugin-{name}"\nversion = "0.0.1"\n{deps}'
        f'[project.entry-points.unlearn]\n{entry or name} = "unlearn_plugin_{name}"\n'
    )
    return pkg


def constant_nli_classifier(folder: Path, label: int) -> Path:
    """A real tiny NLI classifier on the tiny tokenizer whose head always says ``label``: its
    layers add nothing to the residual stream, every token embeds as the first unit vector, and
    the head reads that unit into ``label``'s logit."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from unlearn.devkit import cached_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(cached_tiny_model())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        id2label={0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"},
        label2id={"ENTAILMENT": 0, "NEUTRAL": 1, "CONTRADICTION": 2},
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.score.weight.zero_()
        model.score.weight[label, 0] = 1.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class CrashOnce:
    """A test plugin whose loss method ``crashy`` (GA, no retain set) raises at step 3 the first
    time, like a killed job, and trains normally afterwards."""

    def __init__(self) -> None:
        self.crashed = False

    @hookimpl
    def register_methods(self, register):
        class Empty(Config):
            """No settings."""

        register("crashy", config=Empty, kind="loss", uses_retain=False)

    @hookimpl
    def compute_loss(self, method, config, ctx):
        if ctx.step == 3 and not self.crashed:
            self.crashed = True
            raise KeyboardInterrupt
        return -ctx.nll("forget")
