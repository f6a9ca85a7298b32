"""One entrant's run: its private folder and data copies, its scrubbed environment, its command,
the sandbox around it, and the check of what it leaves."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unlearn import ConfigError, write_json, write_jsonl
from unlearn.engine import free_port, zero3_layer_sizes

from .checks import check_model
from .config import Competition, Entrant
from .environments import BuildError, environment, python_of
from .leaderboard import CHECKPOINT_SCORED
from .sandbox import Protection
from .supervise import Limits, Outcome, supervise

_SANDBOX = Path(__file__).with_name("sandbox.py")
_HARNESS = Path(__file__).with_name("harness.py")


def readable_paths() -> list[str]:
    """What an entrant's Python needs to read: the system, the interpreter, the installed packages."""
    import importlib.util
    import site
    import sysconfig

    paths = {"/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/sys"}  # /proc, /dev: see system_paths
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

    # The plugin API, the engine, the CLI, and every plugin (the built-in applications are plugins too).
    modules = ["unlearn", "unlearn.engine", "unlearn.cli"] + [
        ep.value.split(":")[0] for ep in entry_points(group="unlearn")
    ]
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            paths |= set(spec.submodule_search_locations)
        elif spec.origin:
            paths.add(str(Path(spec.origin).parent))
    return sorted(p for p in paths if p and Path(p).exists())


# Of /dev, the devices a training needs (not the disks, nor the kernel's log).
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "pts")


def system_paths(gpus: bool) -> tuple[list[str], list[str]]:
    """The /proc and /dev paths an entrant may read and those it may write. /proc whole: psutil
    (DeepSpeed, accelerate) reads each process's own folder, which Landlock cannot grant apart
    from the others'; a PID namespace is what hides the other processes. /dev: the plain devices,
    shared memory, and with ``gpus`` the NVIDIA and InfiniBand ones (CUDA opens them read-write)."""
    readable = ["/proc", *(f"/dev/{name}" for name in _DEVICES)]
    writable = ["/dev/null", "/dev/shm"]
    if gpus:
        writable += sorted(str(p) for p in Path("/dev").glob("nvidia*")) + ["/dev/infiniband"]
    return [p for p in readable if Path(p).exists()], [p for p in writable if Path(p).exists()]


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
    if launcher in ("deepspeed", "accelerate"):
        # DeepSpeed compiles CPU ops once into this cache; sharing it saves a minute per entrant.
        env["TORCH_EXTENSIONS_DIR"] = os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions")
        )
    return env


def write_split(rows: list[Any], folder: Path, name: str) -> None:
    """``NAME.jsonl`` and ``NAME.parquet`` in the organisers' five-column schema
    (``id, input, output, task, split``; ``split`` is ``forget`` or ``retain``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"id": r.id, "input": r.input, "output": r.output, "task": r.task, "split": name} for r in rows]
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / f"{name}.jsonl", records)
    pq.write_table(pa.Table.from_pylist(records), folder / f"{name}.parquet")


def submission_entry(entrant: Entrant) -> Path:
    """The file of a submission that defines ``unlearn()``: the file itself, a folder's ``entry``,
    or a folder's only top-level ``.py`` file that defines it; else a one-line `ConfigError`."""
    source = entrant.submission
    assert source is not None
    where = f"entrant {entrant.name!r}: submission {source}"
    if source.is_file():
        if source.suffix != ".py":
            raise ConfigError(f"{where}: not a .py file")
        return source
    if not source.is_dir():
        raise ConfigError(f"{where}: no such file or folder")
    if entrant.entry is not None:
        if not (source / entrant.entry).is_file():
            raise ConfigError(f"{where}: entry {entrant.entry!r} is not a file in it")
        return source / entrant.entry
    defining = [f for f in sorted(source.glob("*.py")) if "def unlearn(" in f.read_text(errors="replace")]
    if len(defining) != 1:
        found = ", ".join(f.name for f in defining) or "none"
        raise ConfigError(f"{where}: give entry = the file that defines unlearn() (top-level ones that do: {found})")
    return defining[0]


def copy_submission(entrant: Entrant, work: Path) -> Path:
    """Copy the submission into ``work/submission/`` (a folder whole, links kept as links, so none
    reaches outside what the sandbox lets it read); returns the entry file's copy."""
    entry, dest = submission_entry(entrant), work / "submission"
    source = entrant.submission
    assert source is not None
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        return dest / entry.relative_to(source)
    dest.mkdir()
    shutil.copy2(entry, dest / entry.name)
    return dest / entry.name


def launch_command(
    comp: Competition, launcher: str, python: str, target: list[str], gpus: bool = True, config: Path | None = None
) -> list[str]:
    """``target`` (a script and its arguments, or ``-m module ...``) under ``launcher``.

    ``accelerate`` is ``accelerate launch`` with ``nproc`` processes and, with GPUs, DeepSpeed from
    ``config``; without GPUs accelerate starts one process (``--cpu``: its multi-CPU launch needs MPI).
    """
    if launcher == "python":
        return [python, *target]
    port = str(free_port())
    if launcher == "accelerate":
        run = [python, "-m", "accelerate.commands.launch", "--num_machines", "1", "--num_processes", str(comp.nproc)]
        run += ["--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no"]
        if not gpus:
            return [*run, "--cpu", *target]
        run += ["--multi_gpu"] if comp.nproc > 1 else []
        return [*run, *(["--use_deepspeed", "--deepspeed_config_file", str(config)] if config else []), *target]
    run = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(comp.nproc)]
    return [*run, "--master_addr", "127.0.0.1", "--master_port", port, *target]


def submission_deepspeed(comp: Competition, work: Path) -> Path:
    """The DeepSpeed config a submission is given under launcher ``deepspeed``: the competition's
    file as is, or a preset with HF's ``auto`` sizes (what the HF Trainer and accelerate fill in).
    A ZeRO-3 preset also gathers the weights on save (else HF's ``save_model`` writes no loadable
    model) and sizes the live parameters and the optimiser's sub-groups from the target's hidden
    size as ``unlearn run`` does."""
    path, preset = work / "ds_config.json", re.fullmatch(r"zero([0-3])", comp.deepspeed)
    if preset and not Path(comp.deepspeed).exists():
        sizes = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")
        zero: dict[str, object] = {"stage": int(preset[1])}
        config = {"zero_optimization": zero, **dict.fromkeys(sizes, "auto"), "gradient_clipping": "auto"}
        if zero["stage"] == 3:
            zero["stage3_gather_16bit_weights_on_model_save"] = True
            hidden = _hidden_size(comp.model)
            if hidden:
                zero |= zero3_layer_sizes(hidden)
        write_json(path, config)
    else:
        shutil.copy2(comp.deepspeed, path)
    return path


def _hidden_size(model: Path) -> int | None:
    """The target's ``hidden_size`` from its config.json (a multimodal config's text part), if any."""
    try:
        found = json.loads((model / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    size = found.get("hidden_size") or found.get("text_config", {}).get("hidden_size")
    return size if isinstance(size, int) else None


def entrant_command(
    comp: Competition, entrant: Entrant, work: Path, python: str = sys.executable, gpus: bool = True
) -> list[str]:
    launcher = entrant.launcher or comp.launcher
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
        if launcher == "deepspeed":
            run_config["deepspeed"] = comp.deepspeed
        write_json(work / "run.json", run_config)
        cli = ["-m", "unlearn", "run", "--config", str(work / "run.json")]
        return launch_command(comp, "torchrun" if launcher == "accelerate" else launcher, python, cli)
    if entrant.kind == "recipe":
        from unlearn.recipes import find_recipe

        source = find_recipe(entrant.recipe)
        shutil.copy2(source, work / source.name)
        return [
            python,
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
    entry = copy_submission(entrant, work)
    # the harness runs as a file: it imports only the standard library, whatever the entrant's packages
    folders = [str(work / "output"), str(work / "forget"), str(work / "retain")]
    config = submission_deepspeed(comp, work) if launcher in ("deepspeed", "accelerate") else None
    return launch_command(comp, launcher, python, [str(_HARNESS), str(entry), model, *folders], gpus, config)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def clear_stale_locks(extensions: Path) -> None:
    """Remove torch's JIT-build ``lock`` files that no process holds open. A builder keeps its lock
    open until it is done; one killed with its entrant (at the time limit, say) leaves the file,
    and every later build of that op, in every later entrant, waits on it forever."""
    locks = [p for p in extensions.glob("*/lock")] + [p for p in extensions.glob("*/*/lock")]
    if not locks:
        return
    held = set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            held.add(os.readlink(fd))
        except OSError:
            pass
    for lock in locks:
        if str(lock.resolve()) not in held:
            lock.unlink(missing_ok=True)


def allowed_ports(command: list[str], launcher: str) -> list[str]:
    """The TCP ports a launch needs with no network: none for one process; for torchrun's ranks
    the rendezvous port and the kernel's ephemeral range, where gloo and NCCL listen (port 0 is
    how a socket asks for one of those)."""
    if launcher == "python" or (launcher == "accelerate" and "--cpu" in command):
        return []
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    flag = "--main_process_port" if launcher == "accelerate" else "--master_port"
    return [command[command.index(flag) + 1], "0", f"{low}-{high}"]


def output_folder(entrant: Entrant, work: Path) -> Path:
    """Where the entrant's model should be: ``output/``, or the model folder a recipe reports."""
    if entrant.kind == "recipe" and (work / "output" / "recipe.json").is_file():
        folder = Path(json.loads((work / "output" / "recipe.json").read_text())["model"]).resolve()
        if work.resolve() in folder.parents:
            return folder
    return work / "output"


def find_model(output: Path, cut_short: bool = False) -> tuple[Path, str, str]:
    """The model to score, with its `check_model` verdict.

    A finished run: ``output`` when it holds weights, else the newest model one folder down that
    passes the check (saved in ``output/final/``, a Trainer's ``checkpoint-N``). A run ``cut_short``
    by the time limit: the newest model that passes, ``output`` included (one being written when
    the run was killed fails the check, so the one before it is taken). Newest by its weights'
    time. Nothing passes: ``output``'s own verdict.
    """
    inside = [d for d in output.iterdir() if d.is_dir()] if output.is_dir() else []
    if not cut_short and any(output.glob("*.safetensors")):
        return (output, *check_model(output))
    saved = {d: max((f.stat().st_mtime for f in d.glob("*.safetensors")), default=None) for d in [output, *inside]}
    saved = {d: t for d, t in saved.items() if t is not None}
    for folder in sorted(saved, key=saved.__getitem__, reverse=True):
        status, reason = check_model(folder)
        if status == "ok":
            return folder, status, reason
    return (output, *check_model(output))


def landlock_rules(
    comp: Competition,
    command: list[str],
    launcher: str,
    env: dict[str, str],
    readable: list[str],
    protection: Protection,
    gpus: bool,
    model: Path,
    venv: Path | None,
    python: str,
) -> list[str]:
    """The sandbox's Landlock arguments for one entrant: read the system, its Python and the
    model; write its own folder (and the shared JIT-build cache); TCP only where a launch needs it."""
    work = Path(env["UNLEARN_OUTPUT_DIR"]).parent
    system_read, system_write = system_paths(gpus)
    writable = [str(work), *system_write]
    if "TORCH_EXTENSIONS_DIR" in env:
        Path(env["TORCH_EXTENSIONS_DIR"]).mkdir(parents=True, exist_ok=True)
        writable.append(env["TORCH_EXTENSIONS_DIR"])
    # an environment's own folder, and the installation of the Python it was made from
    visible = [*readable, *system_read, str(model)]
    visible += [str(venv), str(Path(python).resolve().parents[1])] if venv else []
    rules = [a for p in visible for a in ("--ro", p)] + [a for p in writable for a in ("--rw", p)]
    if comp.network == "none" and protection.landlock >= 4:
        rules += ["--no-tcp", *(a for port in allowed_ports(command, launcher) for a in ("--tcp-port", port))]
    return rules


def run_entrant(
    comp: Competition,
    entrant: Entrant,
    folder: Path,
    model: Path,
    forget: list[Any],
    retain: list[Any],
    readable: list[str],
    protection: Protection,
    environments: Path,
    cores: list[int] | None = None,
    devices: str | None = None,
) -> dict[str, Any]:
    """Run one entrant in a fresh ``folder``; its result (status, reason, times, the model to score).

    ``cores``: pin every process of the run to these CPU cores, with a matching torch thread count
    (divided between a launcher's ranks); ``devices``: its GPUs, instead of ``entrant_devices``.
    """
    if folder.exists():
        shutil.rmtree(folder)
    work = folder / "work"
    for sub in ("home", "tmp", "output"):
        (work / sub).mkdir(parents=True)
    write_split(forget, work / "forget", "forget")
    write_split(retain, work / "retain", "retain")
    log = folder / "log.txt"
    result: dict[str, Any] = {"log": str(log.relative_to(folder.parent.parent)), "peak_memory_mb": None}
    launcher = entrant.launcher or comp.launcher
    try:
        venv = environment(entrant, environments, comp.wheelhouse) if entrant.submission else None
    except BuildError as exc:
        log.write_text(f"environment: {exc}\n")
        return {**result, "status": "environment", "reason": str(exc), "wall_time_s": 0.0, "exit_code": None}
    python = str(python_of(venv)) if venv else sys.executable
    token = uuid.uuid4().hex
    devices = devices or comp.entrant_devices
    command = entrant_command(comp, entrant, work, python, gpus=devices != "cpu" and _has_gpu())
    env = entrant_env(work, token, model, launcher, devices)
    if cores:  # oversubscribed OpenMP threads slow torch several-fold: one thread per core given
        ranks = 1 if launcher == "python" or "--cpu" in command else comp.nproc
        threads = str(max(1, len(cores) // ranks))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    if venv is not None:
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    if launcher in ("deepspeed", "accelerate") and entrant.submission:
        env["UNLEARN_DEEPSPEED_CONFIG"] = str(work / "ds_config.json")
    rules = (comp, command, launcher, env, readable, protection, devices != "cpu", model, venv, python)
    command, overhead = _sandboxed(command, comp, protection, lambda: landlock_rules(*rules))
    if "TORCH_EXTENSIONS_DIR" in env:
        clear_stale_locks(Path(env["TORCH_EXTENSIONS_DIR"]))
    gb = lambda v: None if v is None else int(v * 2**30)  # noqa: E731
    limits = Limits(gb(comp.memory_gb), gb(comp.disk_gb), comp.processes, cores, overhead)
    outcome = supervise(command, work, env, log, comp.time_limit_s, comp.grace_s, token, comp.stall_s, limits=limits)
    result.update(
        status=outcome.status,
        reason=outcome.reason,
        wall_time_s=outcome.wall_time_s,
        peak_memory_mb=outcome.peak_memory_mb,
        exit_code=outcome.exit_code,
    )
    return _model_to_score(result, outcome, output_folder(entrant, work), folder)


def _sandboxed(
    command: list[str], comp: Competition, protection: Protection, rules: Callable[[], list[str]]
) -> tuple[list[str], int]:
    """``command`` inside the sandbox (namespaces, and Landlock with ``rules()``) where the kernel
    offers one, and how many of the sandbox's own processes are not counted against the entrant's
    process limit."""
    if not (protection.landlock or protection.pid):
        return command, 0
    overhead = 0
    sandbox = [sys.executable, str(_SANDBOX)]
    if protection.pid:  # the sandbox outside, and the namespace's init
        overhead = 2
        sandbox += ["--pid-namespace", *(["--net-namespace"] if comp.network == "none" and protection.net else [])]
    if protection.landlock:
        sandbox += rules()
    return [*sandbox, "--", *command], overhead


def _model_to_score(result: dict[str, Any], outcome: Outcome, output: Path, folder: Path) -> dict[str, Any]:
    """``result`` with the model to score: the output of a run that ended well, or the newest
    complete checkpoint one cut short by the time limit left."""
    if outcome.status == "ok":
        found, status, reason = find_model(output)
        result.update(status=status, reason=reason, model=str(found.relative_to(folder)))
    elif outcome.status == "timeout":
        found, status, _ = find_model(output, cut_short=True)
        if status == "ok":
            shown = found.relative_to(folder / "work")
            result.update(
                status=CHECKPOINT_SCORED,
                reason=f"{outcome.reason}; scored {shown}, its newest complete model",
                model=str(found.relative_to(folder)),
            )
    return result
