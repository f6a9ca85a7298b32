"""One entrant's run: its private folder and data copies, its scrubbed environment, its command,
the sandbox around it, and the check of what it leaves."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from unlearn import free_port, write_json, write_jsonl

from .checks import check_output
from .config import Competition, Entrant
from .supervise import supervise

_SANDBOX = Path(__file__).with_name("sandbox.py")


def readable_paths() -> list[str]:
    """What an entrant's Python needs to read: the system, the interpreter, the installed packages."""
    import importlib.util
    import site
    import sysconfig

    paths = {"/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev"}
    paths |= {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        str(Path(sys.executable).resolve().parent),
    }
    paths |= {p for p in sysconfig.get_paths().values()}
    paths |= set(site.getsitepackages()) | {site.getusersitepackages()}
    from importlib.metadata import entry_points

    # The core, the CLI, and every plugin (the built-in applications are plugins too).
    modules = ["unlearn", "unlearn.cli"] + [ep.value.split(":")[0] for ep in entry_points(group="unlearn")]
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            paths |= set(spec.submodule_search_locations)
        elif spec.origin:
            paths.add(str(Path(spec.origin).parent))
    return sorted(p for p in paths if p and Path(p).exists())


def entrant_env(work: Path, token: str, model: Path, launcher: str, devices: str = "all") -> dict[str, str]:
    """A scrubbed environment: nothing of the organiser's but PATH, locale and the GPUs the
    entrant may use (``devices``: all, cpu, or a CUDA_VISIBLE_DEVICES list)."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    if devices == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif devices != "all":
        env["CUDA_VISIBLE_DEVICES"] = devices
    elif "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    env.update(
        {
            "HOME": str(work / "home"),
            "TMPDIR": str(work / "tmp"),
            "HF_HOME": str(work / "home" / "hf"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONNOUSERSITE": "1",
            "PYTHONUNBUFFERED": "1",
            "UNLEARN_ENTRANT_TOKEN": token,
            "UNLEARN_INPUT_MODEL": str(model),
            "UNLEARN_OUTPUT_DIR": str(work / "output"),
            "UNLEARN_FORGET_DIR": str(work / "forget"),
            "UNLEARN_RETAIN_DIR": str(work / "retain"),
        }
    )
    if launcher == "deepspeed":
        # DeepSpeed compiles CPU ops once into this cache; sharing it saves a minute per entrant.
        env["TORCH_EXTENSIONS_DIR"] = os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions")
        )
    return env


def write_split(rows: list[Any], folder: Path, name: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"id": r.id, "input": r.input, "output": r.output, "task": r.task} for r in rows]
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / f"{name}.jsonl", records)
    pq.write_table(pa.Table.from_pylist(records), folder / f"{name}.parquet")


def entrant_command(comp: Competition, entrant: Entrant, work: Path) -> list[str]:
    python = [sys.executable]
    model = str(comp.model.resolve())
    if entrant.kind == "plugin":
        run_config = {
            "model": model,
            "forget": "forget",
            "retain": "retain",
            "output_dir": "output",
            "method": entrant.plugin,
            "with": entrant.with_,
            "config": entrant.config,
            "seed": comp.seed,
            "trainer": {**comp.trainer, **entrant.trainer, "progress": False},
        }
        if comp.launcher == "deepspeed":
            run_config["deepspeed"] = comp.deepspeed
        write_json(work / "run.json", run_config)
        cli = ["-m", "unlearn", "run", "--config", str(work / "run.json")]
        if comp.launcher == "python":
            return python + cli
        return (
            python
            + [
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                str(comp.nproc),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(free_port()),
            ]
            + cli
        )
    if entrant.kind == "recipe":
        from unlearn.recipes import find_recipe

        source = find_recipe(entrant.recipe)
        shutil.copy2(source, work / source.name)
        return python + [
            "-m",
            "unlearn",
            "recipe",
            "run",
            str(work / source.name),
            "--model",
            model,
            "--forget",
            str(work / "forget"),
            "--retain",
            str(work / "retain"),
            "-o",
            str(work / "output"),
        ]
    shutil.copy2(entrant.submission, work / "submission.py")
    return python + [
        "-m",
        "unlearn.compete.harness",
        str(work / "submission.py"),
        model,
        str(work / "output"),
        str(work / "forget"),
        str(work / "retain"),
    ]


def model_folder(entrant: Entrant, work: Path) -> Path:
    if entrant.kind == "recipe" and (work / "output" / "recipe.json").is_file():
        folder = Path(json.loads((work / "output" / "recipe.json").read_text())["model"]).resolve()
        if work.resolve() in folder.parents:
            return folder
    return work / "output"


def run_entrant(
    comp: Competition,
    entrant: Entrant,
    folder: Path,
    model: Path,
    forget: list[Any],
    retain: list[Any],
    readable: list[str],
    landlock: int,
) -> dict[str, Any]:
    if folder.exists():
        shutil.rmtree(folder)
    work = folder / "work"
    for sub in ("home", "tmp", "output"):
        (work / sub).mkdir(parents=True)
    write_split(forget, work / "forget", "forget")
    write_split(retain, work / "retain", "retain")
    token = uuid.uuid4().hex
    command = entrant_command(comp, entrant, work)
    env = entrant_env(work, token, model, comp.launcher, comp.entrant_devices)
    if landlock:
        writable = [str(work), "/dev/null", "/dev/shm"]
        if comp.entrant_devices != "cpu":  # CUDA opens its device files read-write
            writable += sorted(str(p) for p in Path("/dev").glob("nvidia*"))
        if "TORCH_EXTENSIONS_DIR" in env:
            Path(env["TORCH_EXTENSIONS_DIR"]).mkdir(parents=True, exist_ok=True)
            writable.append(env["TORCH_EXTENSIONS_DIR"])
        sandbox = [sys.executable, str(_SANDBOX)] + [a for p in [*readable, str(model)] for a in ("--ro", p)]
        command = sandbox + [a for p in writable for a in ("--rw", p)] + ["--"] + command
    log = folder / "log.txt"
    outcome = supervise(command, work, env, log, comp.time_limit_s, comp.grace_s, token, comp.stall_s)
    result: dict[str, Any] = {
        "status": outcome.status,
        "reason": outcome.reason,
        "wall_time_s": outcome.wall_time_s,
        "peak_memory_mb": outcome.peak_memory_mb,
        "exit_code": outcome.exit_code,
        "log": str(log.relative_to(folder.parent.parent)),
    }
    if outcome.status == "ok":
        status, reason = check_output(model_folder(entrant, work))
        result.update(status=status, reason=reason)
    return result
