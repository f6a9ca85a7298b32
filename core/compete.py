"""Organiser mode: run registered plugins, recipes and SemEval-style submissions on private data,
each isolated and time-limited, evaluate them, and publish a leaderboard.

Every entrant runs as its own process group in ``OUT/entrants/NAME/work/``, which holds only
copies of the forget and retain rows (``forget/forget.jsonl`` + ``.parquet``, the same for
retain), its code, a private HOME and TMPDIR, and ``output/`` for the model. It is given the
target model's path and nothing else: no organiser environment variables, no evaluation, MIA
or utility data, and (where the kernel has Landlock, see ``sandbox.py``) no way to open any
other file. The time limit ends the whole group (SIGTERM, then SIGKILL after a grace period),
and every process that carries the entrant's token is killed when it ends, so none survives.

The organiser's process then checks the output (safetensors weights only, loadable without
remote code, finite) and scores it with the evaluator against the target's own evaluation,
done once. Results are cached per entrant under a key of everything that affects them, so a
re-run after a crash or with an added entrant does only the missing work.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import describe_error, read_config_file
from .data import load_rows
from .errors import ConfigError, RunError
from .io import write_json, write_jsonl, write_text
from .plugins import PluginHost, get_host
from .run import free_port

RESULT_FILE = "result.json"
STATUSES = ("ok", "crash", "hang", "timeout", "nan", "no model", "unloadable", "pickle")
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_SANDBOX = Path(__file__).with_name("sandbox.py")


class Entrant(BaseModel):
    """One entry: exactly one of ``plugin``, ``recipe`` or ``submission``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=_NAME, description="Unique; names the entrant's folder and leaderboard row.")
    team: str | None = Field(None, description="The team it belongs to (default: the name); a team's best valid entry ranks.")
    plugin: str | None = Field(None, description="A registered loss method, run with `unlearn run`.")
    with_: list[str] = Field(default_factory=list, alias="with", description="Parameter / post-process entries for a plugin.")
    config: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per-entry settings for a plugin.")
    trainer: dict[str, Any] = Field(default_factory=dict, description="Trainer settings over the competition's.")
    recipe: str | None = Field(None, description="A recipe file or built-in recipe name.")
    submission: Path | None = Field(None, description="A .py file defining unlearn(input_model_path, output_dir, forget_dir, retain_dir).")

    @model_validator(mode="after")
    def _one_kind(self) -> Entrant:
        kinds = [k for k in ("plugin", "recipe", "submission") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of plugin, recipe, submission (got {kinds or 'none'})")
        if self.plugin is None and (self.with_ or self.config or self.trainer):
            raise ValueError("with, config and trainer are settings of plugin entrants")
        return self

    @property
    def kind(self) -> str:
        return "plugin" if self.plugin else "recipe" if self.recipe else "submission"

    @property
    def team_name(self) -> str:
        return self.team or self.name


class Competition(BaseModel):
    """A competition file (TOML/YAML/JSON); paths are relative to the file."""

    model_config = ConfigDict(extra="forbid")

    name: str = "competition"
    model: Path = Field(description="The target model folder (read by entrants, never written).")
    forget: Path = Field(description="Private forget rows (file or folder); entrants get a copy.")
    retain: Path = Field(description="Private retain rows (file or folder); entrants get a copy.")
    mia: Path = Field(description="Folder with mia_member.jsonl and mia_nonmember.jsonl (organiser only).")
    utility: Path | None = Field(None, description="An MMLU folder or a utility.jsonl (organiser only).")
    entrants: list[str | Entrant] = Field(
        min_length=1,
        description='"all" (every installed loss plugin), a plugin name, "recipe:NAME", a recipe file '
        "(.toml/.yaml/.json), a submission .py, or a table with name/team/plugin/recipe/submission.",
    )
    output_dir: Path = Field(Path("runs/competition"), description="Where entrants' folders, results and the leaderboard go.")
    time_limit_s: float = Field(3600, gt=0, description="Wall-clock limit per entrant run (SemEval: one hour).")
    grace_s: float = Field(10, ge=0, description="Between SIGTERM and SIGKILL when the limit is reached.")
    stall_s: float = Field(
        300, gt=0, description="End a run early as `hang` once its processes have used under 5% of a core for this long."
    )
    launcher: Literal["python", "torchrun", "deepspeed"] = Field(
        "python", description="How plugin entrants are launched; deepspeed = torchrun with a DeepSpeed preset."
    )
    nproc: int = Field(1, ge=1, description="Processes for torchrun / deepspeed.")
    deepspeed: str = Field("zero2", description="The DeepSpeed preset or JSON file for launcher = deepspeed.")
    trainer: dict[str, Any] = Field(default_factory=dict, description="Trainer settings for plugin entrants.")
    seed: int = 0
    gate: float = Field(0.75, ge=0, le=1, description="Utility must reach this fraction of the target's own.")
    eval_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_new_tokens: int = Field(256, ge=1)

    def expand(self, host: PluginHost) -> list[Entrant]:
        """The entrants, with "all" and the string forms resolved; names must be unique."""
        found: list[Entrant] = []
        for i, item in enumerate(self.entrants):
            if isinstance(item, Entrant):
                found.append(item)
            elif item == "all":
                found += [Entrant(name=n, plugin=n) for n, e in sorted(host.entries.items()) if e.kind == "loss"
                          and not any(x.name == n for x in found)]
            elif item.startswith("recipe:"):
                found.append(Entrant(name=f"recipe_{item[7:]}", recipe=item[7:]))
            elif item.endswith(".py"):
                found.append(Entrant(name=Path(item).stem, submission=Path(item)))
            elif item.endswith((".toml", ".yaml", ".yml", ".json")):
                found.append(Entrant(name=f"recipe_{Path(item).stem}", recipe=item))
            elif item in host.entries:
                found.append(Entrant(name=item, plugin=item))
            else:
                raise ConfigError(f"entrants[{i}]: {item!r} is not an installed plugin, a recipe or a .py submission")
        names = [e.name for e in found]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"entrants: names used twice: {dupes}; give them distinct names")
        for entrant in found:
            if entrant.plugin is not None:
                host.entry(entrant.plugin, kinds=("loss",))
                for name in entrant.with_:
                    host.entry(name, kinds=("parameters", "post-process"))
        return found


def load_competition(path: Path, overrides: dict[str, Any] | None = None,
                     edit: Callable[[dict[str, Any]], Any] | None = None) -> Competition:
    """Read a competition file; relative paths (entrants' files too) are relative to it."""
    data = read_config_file(path)
    if edit is not None:
        edit(data)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    base = path.parent
    for key in ("mia", "utility"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    entrants = data.get("entrants")
    if isinstance(entrants, list):
        for i, item in enumerate(entrants):
            if isinstance(item, str) and item.endswith((".py", ".toml", ".yaml", ".yml", ".json")) and not Path(item).is_absolute():
                entrants[i] = str(base / item)
            elif isinstance(item, dict):
                for key in ("submission", "recipe"):
                    value = item.get(key)
                    if isinstance(value, str) and (base / value).is_file():
                        item[key] = str(base / value)
    try:
        return Competition.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, source=str(path))) from None


# -- fingerprints and caching -------------------------------------------------------------------


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _model_stamp(model: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file in the target: cheap proof it was not written to."""
    return {str(p.relative_to(model)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(model.rglob("*")) if p.is_file()}


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- running one entrant ------------------------------------------------------------------------


@dataclass
class Outcome:
    """How an entrant's process ended."""

    status: str
    reason: str
    wall_time_s: float
    peak_memory_mb: float
    exit_code: int | None


def _proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(process group, cpu seconds, rss bytes) from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / ticks, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


def _members(pgid: int, token: str) -> dict[int, tuple[float, int]]:
    """CPU seconds and RSS of the entrant's processes: its group, and any process carrying its
    token (torchrun starts its workers in sessions of their own)."""
    needle = f"UNLEARN_ENTRANT_TOKEN={token}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is None:
            continue
        if stat[0] != pgid:
            try:
                if needle not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    continue
            except OSError:
                continue
        found[int(entry)] = stat[1:]
    return found


def _signal_all(pgid: int, token: str, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    for pid in _members(pgid, token):  # also the ones that left the group
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def supervise(command: list[str], cwd: Path, env: dict[str, str], log: Path, time_limit: float, grace: float,
              token: str, stall: float = 300.0, poll: float = 0.25) -> Outcome:
    """Run ``command`` as its own process group under a time limit; none of its processes survive.

    A run idle for ``stall`` seconds (under 5% of one core) is ended early as ``hang``; one still
    busy at the limit as ``timeout``.
    """
    import subprocess

    started = time.time()
    peak = 0
    cpu_seen: list[tuple[float, float]] = []
    cpu_by_pid: dict[int, float] = {}  # processes that ended keep their last reading
    status = None
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                members = _members(proc.pid, token)
                peak = max(peak, sum(rss for _, rss in members.values()))
                now = time.time()
                cpu_by_pid.update({pid: cpu for pid, (cpu, _) in members.items()})
                cpu_seen.append((now, sum(cpu_by_pid.values())))
                if now - started > stall and _idle(cpu_seen, stall):
                    status = "hang"
                elif now - started > time_limit:
                    status = "hang" if _idle(cpu_seen, min(stall, time_limit / 2)) else "timeout"
                if status is not None:
                    _signal_all(proc.pid, token, signal.SIGTERM)
                    try:
                        proc.wait(timeout=grace)
                    except subprocess.TimeoutExpired:
                        pass
                    break
                time.sleep(poll)
        finally:
            _signal_all(proc.pid, token, signal.SIGKILL)  # whatever is left, also after a normal exit
            proc.wait()
    wall = round(time.time() - started, 2)
    mb = round(peak / 2**20, 1)
    if status == "hang":
        return Outcome(status, f"killed after {wall:.0f} s; it had used almost no CPU for {stall:g} s", wall, mb, proc.returncode)
    if status == "timeout":
        return Outcome(status, f"killed at the {time_limit:g} s limit; it was still working", wall, mb, proc.returncode)
    if proc.returncode != 0:
        text = log.read_text(errors="replace")
        if "non-finite loss" in text or "NonFiniteLossError" in text:
            return Outcome("nan", "the loss became NaN or infinite", wall, mb, proc.returncode)
        return Outcome("crash", f"exit code {proc.returncode}: {_error_kind(text)}", wall, mb, proc.returncode)
    return Outcome("ok", "", wall, mb, 0)


def _idle(cpu_seen: list[tuple[float, float]], window: float) -> bool:
    """Whether the processes used under 5% of one core over the last ``window`` seconds."""
    end_t, end_cpu = cpu_seen[-1]
    start_t, start_cpu = next(((t, c) for t, c in cpu_seen if t >= end_t - window), cpu_seen[0])
    return (end_cpu - start_cpu) / max(end_t - start_t, 1e-9) < 0.05


def _error_kind(log: str) -> str:
    """The exception class of the last traceback, never its message (it may quote the data)."""
    names = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))\b", log, flags=re.MULTILINE)
    if names:
        return names[-1].rsplit(".", 1)[-1]
    if re.search(r"^error: ", log, flags=re.MULTILINE):
        return "unlearn error (see the log)"
    return "no traceback (see the log)"


def _readable_paths() -> list[str]:
    """What an entrant's Python needs to read: the system, the interpreter, the installed packages."""
    import importlib.util
    import site
    import sysconfig

    paths = {"/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev"}
    paths |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, str(Path(sys.executable).resolve().parent)}
    paths |= {p for p in sysconfig.get_paths().values()}
    paths |= set(site.getsitepackages()) | {site.getusersitepackages()}
    from importlib.metadata import entry_points

    modules = ["unlearn", "unlearn.evaluator"] + [ep.value.split(":")[0] for ep in entry_points(group="unlearn")]
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            paths |= set(spec.submodule_search_locations)
        elif spec.origin:
            paths.add(str(Path(spec.origin).parent))
    return sorted(p for p in paths if p and Path(p).exists())


def _entrant_env(work: Path, token: str, model: Path, launcher: str) -> dict[str, str]:
    """A scrubbed environment: nothing of the organiser's but PATH and locale."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    env.update({
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
    })
    if launcher == "deepspeed":
        # DeepSpeed compiles CPU ops once into this cache; sharing it saves a minute per entrant.
        env["TORCH_EXTENSIONS_DIR"] = os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))
    return env


def _write_split(rows: list[Any], folder: Path, name: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"id": r.id, "input": r.input, "output": r.output, "task": r.task} for r in rows]
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / f"{name}.jsonl", records)
    pq.write_table(pa.Table.from_pylist(records), folder / f"{name}.parquet")


def _command(comp: Competition, entrant: Entrant, work: Path) -> list[str]:
    python = [sys.executable]
    model = str(comp.model.resolve())
    if entrant.kind == "plugin":
        run_config = {
            "model": model, "forget": "forget", "retain": "retain", "output_dir": "output",
            "method": entrant.plugin, "with": entrant.with_, "config": entrant.config, "seed": comp.seed,
            "trainer": {**comp.trainer, **entrant.trainer, "progress": False},
        }
        if comp.launcher == "deepspeed":
            run_config["deepspeed"] = comp.deepspeed
        write_json(work / "run.json", run_config)
        cli = ["-m", "unlearn", "run", "--config", str(work / "run.json")]
        if comp.launcher == "python":
            return python + cli
        return python + ["-m", "torch.distributed.run", "--nproc_per_node", str(comp.nproc),
                         "--master_addr", "127.0.0.1", "--master_port", str(free_port())] + cli
    if entrant.kind == "recipe":
        from .recipe import find_recipe

        source = find_recipe(entrant.recipe)
        shutil.copy2(source, work / source.name)
        return python + ["-m", "unlearn", "recipe", "run", str(work / source.name), "--model", model,
                         "--forget", str(work / "forget"), "--retain", str(work / "retain"), "-o", str(work / "output")]
    shutil.copy2(entrant.submission, work / "submission.py")
    return python + ["-m", "unlearn.harness", str(work / "submission.py"), model, str(work / "output"),
                     str(work / "forget"), str(work / "retain")]


def _model_folder(entrant: Entrant, work: Path) -> Path:
    if entrant.kind == "recipe" and (work / "output" / "recipe.json").is_file():
        folder = Path(json.loads((work / "output" / "recipe.json").read_text())["model"]).resolve()
        if work.resolve() in folder.parents:
            return folder
    return work / "output"


def check_output(folder: Path) -> tuple[str, str]:
    """Accept only a safetensors model that loads without remote code and has finite weights."""
    from safetensors import safe_open

    if not folder.is_dir() or not any(folder.iterdir()):
        return "no model", "the output folder is empty"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern)]
        if pickles:
            return "pickle", f"weights only as pickle files ({', '.join(sorted(pickles)[:3])}); only safetensors are accepted"
        return "no model", "no safetensors weights in the output folder"
    if not (folder / "config.json").is_file():
        return "unloadable", "no config.json beside the weights"
    try:
        for file in weights:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    tensor = handle.get_tensor(name)
                    if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                        return "nan", f"non-finite values in {name}"
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the entrant's fault
        return "unloadable", f"{file.name}: {type(exc).__name__}"
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
        AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        return "unloadable", f"does not load with the Auto classes ({type(exc).__name__})"
    return "ok", ""


# -- the competition ----------------------------------------------------------------------------


class Reporter:
    """Progress: one line per entrant as it starts and ends, and an overall bar."""

    def __init__(self, total: int, say: Callable[[str], None] | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._say = say
        self._progress = None
        if say is None:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True))
            self._task = self._progress.add_task("competition", total=total)
            self._progress.start()

    def line(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self._say(text)

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def run_competition(comp: Competition, host: PluginHost | None = None, only: list[str] | None = None,
                    rerun: list[str] | None = None, say: Callable[[str], None] | None = None) -> Path:
    """Run every entrant not already done, evaluate, and write the leaderboard; returns its folder."""
    from .evaluator.evaluate import RESULTS, evaluate_model
    from .sandbox import abi

    host = host or get_host()
    entrants = comp.expand(host)
    if only:
        unknown = sorted(set(only) - {e.name for e in entrants})
        if unknown:
            raise ConfigError(f"--entrant {unknown}: not in this competition ({', '.join(e.name for e in entrants)})")
        entrants = [e for e in entrants if e.name in only]
    model = comp.model.resolve()
    if not (model / "config.json").is_file():
        raise ConfigError(f"model: {comp.model}: not a model folder (no config.json)")
    forget, retain = load_rows(comp.forget, "forget"), load_rows(comp.retain, "retain")
    out = comp.output_dir.resolve()
    organiser = out / "organiser"
    eval_data = organiser / "data"
    _write_split(forget, eval_data, "forget")
    _write_split(retain, eval_data, "retain")
    landlock = abi()
    isolation = f"Landlock ABI {landlock}: own folder, read-only system and model" if landlock else \
        "environment and folder only (this kernel has no Landlock)"
    # The target is keyed by its files' sizes and times: hashing a 7B model at every start costs minutes.
    data_key = {"target": _key(_model_stamp(model)), "forget": _hash_files([eval_data / "forget.jsonl"]),
                "retain": _hash_files([eval_data / "retain.jsonl"])}
    eval_key = {**data_key, "mia": _hash_files([comp.mia]), "utility": _hash_files([comp.utility]) if comp.utility else None,
                "dtype": comp.eval_dtype, "max_new_tokens": comp.max_new_tokens}
    scored_key = _key({**eval_key, "gate": comp.gate})  # an entrant's scores and its gate verdict
    eval_args = {"mia": comp.mia, "utility": comp.utility, "dtype": comp.eval_dtype,
                 "max_new_tokens": comp.max_new_tokens, "progress": False}

    report = Reporter(len(entrants), say)
    previous = _stop_on_sigterm()
    try:
        baseline = organiser / "baseline"
        key_file = organiser / "baseline_key.json"
        if not (baseline / RESULTS).is_file() or not key_file.is_file() or json.loads(key_file.read_text()) != eval_key:
            report.line("baseline: evaluating the target")
            evaluate_model(model, eval_data, baseline, **eval_args)
            write_json(key_file, eval_key)
        else:
            report.line("baseline: cached")
        before = json.loads((baseline / RESULTS).read_text())
        stamp = _model_stamp(model)
        readable = _readable_paths()
        for i, entrant in enumerate(entrants, start=1):
            folder = out / "entrants" / entrant.name
            run_key = _key({"entrant": entrant.model_dump(mode="json", by_alias=True), **data_key,
                            "code": _hash_files([entrant.submission]) if entrant.submission else None,
                            "recipe": _hash_files([_recipe_file(entrant)]) if entrant.recipe else None,
                            "launcher": comp.launcher, "nproc": comp.nproc, "deepspeed": comp.deepspeed,
                            "trainer": comp.trainer, "seed": comp.seed, "time_limit_s": comp.time_limit_s,
                            "stall_s": comp.stall_s})
            cached = _read_result(folder)
            if cached and cached.get("run_key") == run_key and entrant.name not in (rerun or []):
                if cached["status"] != "ok" or cached.get("eval_key") == scored_key:
                    report.line(f"[{i}/{len(entrants)}] {entrant.name}: cached, {_summary(cached)}")
                    report.advance()
                    continue
                result = cached  # the run is done; only its evaluation is missing or stale
            else:
                report.line(f"[{i}/{len(entrants)}] {entrant.name} ({entrant.kind}, team {entrant.team_name}): started")
                result = _run_entrant(comp, entrant, folder, model, forget, retain, readable, landlock)
                result.update(run_key=run_key, name=entrant.name, team=entrant.team_name, kind=entrant.kind)
                if _model_stamp(model) != stamp:
                    raise RunError(f"the target model {model} changed during entrant {entrant.name!r}; the competition stops")
            if result["status"] == "ok":
                result = _evaluate(result, entrant, folder, eval_data, baseline, before, comp, eval_args, evaluate_model)
                result["eval_key"] = scored_key
            write_json(folder / RESULT_FILE, result)
            report.line(f"[{i}/{len(entrants)}] {entrant.name}: {_summary(result)}")
            report.advance()
    finally:
        report.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    results = [r for r in (_read_result(out / "entrants" / e.name) for e in comp.expand(host)) if r]
    return write_leaderboard(comp, results, before, isolation, out)


def _stop_on_sigterm() -> Any:
    """Turn SIGTERM into an exception so the running entrant's processes are killed on the way out."""
    import threading

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, stop)


def _recipe_file(entrant: Entrant) -> Path:
    from .recipe import find_recipe

    return find_recipe(entrant.recipe)


def _read_result(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / RESULT_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _summary(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status']} ({result['reason']}) after {result['wall_time_s']:.0f} s"
    gate = "pass" if result.get("gate") else "FAIL"
    return f"ok, final score {result['final_score']:.3f} (gate {gate}), {result['wall_time_s']:.0f} s"


def _run_entrant(comp: Competition, entrant: Entrant, folder: Path, model: Path, forget: list[Any], retain: list[Any],
                 readable: list[str], landlock: int) -> dict[str, Any]:
    if folder.exists():
        shutil.rmtree(folder)
    work = folder / "work"
    for sub in ("home", "tmp", "output"):
        (work / sub).mkdir(parents=True)
    _write_split(forget, work / "forget", "forget")
    _write_split(retain, work / "retain", "retain")
    token = uuid.uuid4().hex
    command = _command(comp, entrant, work)
    if landlock:
        writable = [str(work), "/dev/null", "/dev/shm"]
        env = _entrant_env(work, token, model, comp.launcher)
        if "TORCH_EXTENSIONS_DIR" in env:
            Path(env["TORCH_EXTENSIONS_DIR"]).mkdir(parents=True, exist_ok=True)
            writable.append(env["TORCH_EXTENSIONS_DIR"])
        sandbox = [sys.executable, str(_SANDBOX)] + [a for p in [*readable, str(model)] for a in ("--ro", p)]
        command = sandbox + [a for p in writable for a in ("--rw", p)] + ["--"] + command
    else:
        env = _entrant_env(work, token, model, comp.launcher)
    log = folder / "log.txt"
    outcome = supervise(command, work, env, log, comp.time_limit_s, comp.grace_s, token, comp.stall_s)
    result: dict[str, Any] = {"status": outcome.status, "reason": outcome.reason, "wall_time_s": outcome.wall_time_s,
                              "peak_memory_mb": outcome.peak_memory_mb, "exit_code": outcome.exit_code,
                              "log": str(log.relative_to(folder.parent.parent))}
    if outcome.status == "ok":
        status, reason = check_output(_model_folder(entrant, work))
        result.update(status=status, reason=reason)
    return result


def _evaluate(result: dict[str, Any], entrant: Entrant, folder: Path, eval_data: Path, baseline: Path,
              before: dict[str, Any], comp: Competition, eval_args: dict[str, Any], evaluate_model: Callable) -> dict[str, Any]:
    scores = evaluate_model(_model_folder(entrant, folder / "work"), eval_data, folder / "evaluation", **eval_args)
    utility, base = scores.get("mmlu_average"), before.get("mmlu_average")
    result.update(
        final_score=scores["aggregate-score"],
        task_aggregate=scores["harmonic-mean-task-aggregate"],
        mia_auc=scores.get("mia_loss_acc"),
        mia_score=scores.get("mia_final_score"),
        utility=utility,
        gate=None if utility is None or base is None else utility >= comp.gate * base,
    )
    return result


# -- the leaderboard ----------------------------------------------------------------------------

_COLUMNS = ("rank", "team", "entrant", "kind", "final_score", "task_aggregate", "mia_score", "utility", "gate",
            "wall_time_s", "peak_memory_mb", "status", "reason")


def rank(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every entrant in order (valid first: status ok and gate passed, by final score), with ranks
    for the valid ones; and each team's best entry (its best valid one, else its best other)."""

    def order(r: dict[str, Any]) -> tuple:
        valid = r["status"] == "ok" and r.get("gate") is not False
        return (not valid, r["status"] != "ok", -(r.get("final_score") or 0.0), r["name"])

    rows = []
    position = 0
    for r in sorted(results, key=order):
        valid = r["status"] == "ok" and r.get("gate") is not False
        position += valid
        rows.append({"rank": position if valid else None, "team": r["team"], "entrant": r["name"], "kind": r["kind"],
                     **{k: r.get(k) for k in _COLUMNS[4:]}})
    teams: dict[str, dict[str, Any]] = {}
    for row in rows:  # already best first
        teams.setdefault(row["team"], row)
    best = list(teams.values())
    ordered = []
    position = 0
    for row in best:
        position += row["rank"] is not None
        ordered.append({**row, "rank": position if row["rank"] is not None else None})
    return rows, ordered


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key == "gate":
        return "pass" if value else "FAIL"
    if isinstance(value, (int, float)) and key != "rank":
        return f"{value:.0f}" if key in ("wall_time_s", "peak_memory_mb") else f"{value:.3f}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    head = "| " + " | ".join(c.replace("_", " ") for c in columns) + " |"
    lines = [head, "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c), c).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines)


def write_leaderboard(comp: Competition, results: list[dict[str, Any]], before: dict[str, Any], isolation: str,
                      out: Path) -> Path:
    """``leaderboard.md``, ``.csv``, ``.json`` and ``.png`` in ``out``; no data text is ever written."""
    rows, teams = rank(results)
    target = {"final_score": before.get("aggregate-score"), "task_aggregate": before.get("harmonic-mean-task-aggregate"),
              "mia_score": before.get("mia_final_score"), "utility": before.get("mmlu_average")}
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES if any(r["status"] == s for r in results)}
    facts = {"competition": comp.name, "target": str(comp.model), "entrants": len(results), "statuses": counts,
             "time_limit_s": comp.time_limit_s, "launcher": f"{comp.launcher} x{comp.nproc}", "isolation": isolation,
             "utility_gate": f"{comp.gate:g} x target utility {target['utility']}"}
    team_cols = ("rank", "team", "entrant", "final_score", "task_aggregate", "mia_score", "utility", "gate", "status")
    md = [f"# Leaderboard: {comp.name}", "",
          f"Target `{Path(comp.model).name}`: final score {_cell(target['final_score'], '')}, task aggregate "
          f"{_cell(target['task_aggregate'], '')}, MIA score {_cell(target['mia_score'], '')}, utility {_cell(target['utility'], '')}. "
          f"{len(results)} entrants; limit {comp.time_limit_s:g} s each ({comp.launcher} x{comp.nproc}); isolation: {isolation}; "
          f"utility gate: {comp.gate:g} x the target's.", "",
          "## Teams (each team's best valid entry)", "", _table(teams, team_cols), "",
          "## Every entrant", "", _table(rows, _COLUMNS), ""]
    write_text(out / "leaderboard.md", "\n".join(md))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*_COLUMNS, "team_best"])
    writer.writeheader()
    best = {(t["team"], t["entrant"]) for t in teams}
    for row in rows:
        writer.writerow({**row, "team_best": (row["team"], row["entrant"]) in best})
    write_text(out / "leaderboard.csv", buffer.getvalue())
    write_json(out / "leaderboard.json", {**facts, "baseline": target, "teams": teams, "entrants": rows})
    _figure(out / "leaderboard.png", rows, target, comp.name)
    return out


def _figure(path: Path, rows: list[dict[str, Any]], target: dict[str, Any], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["status"] == "ok"]
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.3 * len(rows) + 1.5)))
    names = [r["entrant"] for r in rows][::-1]
    values = [r["final_score"] or 0.0 for r in rows][::-1]
    colours = ["tab:green" if r["rank"] else "tab:orange" if r["status"] == "ok" else "tab:gray" for r in rows][::-1]
    bars.barh(names, values, color=colours)
    for y, r in enumerate(rows[::-1]):
        if r["status"] != "ok":
            bars.text(0.01, y, r["status"], va="center", fontsize=8)
    if target["final_score"] is not None:
        bars.axvline(target["final_score"], color="black", linestyle="--", linewidth=1, label="target")
        bars.legend(loc="lower right", fontsize=8)
    bars.set_xlabel("final score (green: ranked, orange: failed the utility gate, grey: no score)")
    bars.set_xlim(0, 1)
    for r in scored:
        scatter.scatter(r["task_aggregate"], r["mia_score"] or 0.0, color="tab:green" if r["rank"] else "tab:orange")
        scatter.annotate(r["entrant"], (r["task_aggregate"], r["mia_score"] or 0.0), fontsize=7, xytext=(3, 3),
                         textcoords="offset points")
    if target["task_aggregate"] is not None:
        scatter.scatter(target["task_aggregate"], target["mia_score"] or 0.0, marker="x", color="black", label="target")
        scatter.legend(loc="lower right", fontsize=8)
    scatter.set_xlabel("task aggregate")
    scatter.set_ylabel("MIA score")
    scatter.set_xlim(-0.02, 1.02)
    scatter.set_ylim(-0.02, 1.02)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
