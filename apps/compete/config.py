"""The competition file: entrants and the settings every run shares."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from unlearn import Benchmark, ConfigError
from unlearn.engine import PluginHost, benchmarks, describe_error, read_config_file

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Launcher = Literal["python", "torchrun", "deepspeed", "accelerate"]


class Entrant(BaseModel):
    """One entrant: exactly one of ``plugin``, ``recipe`` or ``submission``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=_NAME, description="Unique; names the entrant's folder and leaderboard row.")
    team: str | None = Field(
        None, description="The team it belongs to (default: the name); a team's best valid entry ranks."
    )
    plugin: str | None = Field(None, description="A registered loss method, run with `unlearn run`.")
    with_: list[str] = Field(
        default_factory=list, alias="with", description="Parameter / post-process methods for a plugin."
    )
    config: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per-method settings for a plugin.")
    trainer: dict[str, Any] = Field(default_factory=dict, description="Trainer settings over the competition's.")
    recipe: str | None = Field(None, description="A recipe file or built-in recipe name.")
    submission: Path | None = Field(
        None,
        description="A .py file defining unlearn(input_model_path, output_dir, forget_dir, retain_dir), or a "
        "folder holding it (copied whole, so its own modules import).",
    )
    entry: str | None = Field(
        None,
        description="A folder submission's file that defines unlearn() (default: its only top-level .py "
        "file that does).",
    )
    launcher: Launcher | None = Field(None, description="How this entrant is started (default: the competition's).")
    python: str | None = Field(
        None,
        description='A submission\'s Python: a version ("3.12", found as python3.12 on PATH) or an interpreter '
        "path (default: the organiser's).",
    )
    requirements: list[str] | Path | None = Field(
        None,
        description="A submission's extra packages: a list of requirement strings or a requirements file. The "
        "organiser builds one environment per distinct declaration (cached), where they come before the "
        "organiser's packages.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Entrant:
        kinds = [k for k in ("plugin", "recipe", "submission") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of plugin, recipe, submission (got {kinds or 'none'})")
        if self.plugin is None and (self.with_ or self.config or self.trainer):
            raise ValueError("with, config and trainer are settings of plugin entrants")
        if self.submission is None and (self.entry or self.python or self.requirements):
            raise ValueError("entry, python and requirements are settings of submission entrants")
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
    benchmark: str = Field(
        "lume",
        description="The installed benchmark entrants are scored on: lume (forget, retain, mia, utility, the "
        "official score) or another benchmark plugin, which evaluates `data` its own way.",
    )
    data: Path | None = Field(
        None,
        description="The benchmark's data folder the organiser evaluates on (a benchmark that scores its "
        "own layout; LUME scores the private forget and retain rows).",
    )
    reference: Path | None = Field(
        None,
        description="The oracle (the target retrained without the forget set): its model folder or its saved "
        "evaluation (TOFU forget quality, MUSE PrivLeak; for lume its evaluation, the leaderboard's oracle row).",
    )
    mia: Path | None = Field(
        None,
        description="lume: folder with mia_member.jsonl and mia_nonmember.jsonl, or the organisers' member.jsonl and "
        "nonmember.jsonl (organiser only).",
    )
    utility: Path | None = Field(
        None, description="An MMLU folder, an open-instruct metrics.json or a utility.jsonl (organiser only)."
    )
    entrants: list[str | Entrant] = Field(
        min_length=1,
        description='"all" (every installed loss plugin), a plugin name, "recipe:NAME", a recipe file '
        '(.toml/.yaml/.json), a submission .py or folder ("team_a/"), or a table with name/team/plugin/recipe/'
        "submission and their settings.",
    )
    output_dir: Path = Field(
        Path("runs/competition"), description="Where entrants' folders, results and the leaderboard go."
    )
    time_limit_s: float = Field(3600, gt=0, description="Wall-clock limit per entrant run (SemEval: one hour).")
    grace_s: float = Field(10, ge=0, description="Between SIGTERM and SIGKILL when the limit is reached.")
    stall_s: float = Field(
        300,
        gt=0,
        description="End a run early as `hang` once its processes have used under 5% of a core for this long.",
    )
    launcher: Launcher = Field(
        "python",
        description="How entrants are started: python (one process), torchrun (nproc processes with RANK, "
        "WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set), deepspeed (torchrun, and the DeepSpeed config: a plugin "
        "trains with it, a submission finds its file in UNLEARN_DEEPSPEED_CONFIG and OUTPUT/../ds_config.json), "
        "accelerate (submissions: `accelerate launch` with nproc processes and, on GPUs, that DeepSpeed config; "
        "on a CPU one process; plugin entrants use torchrun).",
    )
    nproc: int = Field(1, ge=1, description="Processes for torchrun / deepspeed / accelerate.")
    deepspeed: str = Field(
        "zero2", description="The DeepSpeed preset (zero0..zero3) or JSON file for launchers deepspeed, accelerate."
    )
    network: Literal["none", "open"] = Field(
        "none",
        description="Entrants' TCP where the kernel's Landlock has network rules (ABI 4+): none (no bind or "
        "connect; with several processes only the rendezvous port and the ephemeral ports the ranks' "
        "process group uses) or open. Rules name ports, not addresses; UDP is not covered.",
    )
    memory_gb: float | None = Field(
        None, gt=0, description="Memory an entrant may use (RSS summed over its processes); past it: status memory."
    )
    eval_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory the evaluation of one entrant's model may use (its process's RSS; default memory_gb); "
        "past it the entrant is unscorable.",
    )
    disk_gb: float | None = Field(
        None, gt=0, description="Bytes an entrant may write into its folder, no file larger; past it: status disk."
    )
    processes: int | None = Field(
        None, ge=1, description="Processes an entrant may run at once; past it: status processes."
    )
    engine: Literal["sequential", "local", "slurm"] = Field(
        "sequential",
        description="Where entrants run: one after another here; local (submitit's local executor: `parallel` "
        "at once, each pinned to its share of the cores and GPUs); slurm (one Slurm job each, through submitit).",
    )
    parallel: int = Field(1, ge=1, description="Entrants running at once (engines local and slurm).")
    slurm: dict[str, Any] = Field(
        default_factory=dict,
        description="submitit's Slurm parameters for each entrant's job, e.g. slurm_partition, gpus_per_node, "
        "cpus_per_task, mem_gb (default: memory_gb + 1, the job's own Python beside the entrant; without "
        "memory_gb Slurm gives each job the whole node's memory, so jobs run one at a time).",
    )
    lost_after_s: float = Field(
        60,
        gt=0,
        description="engine slurm: how long a job that ended may take to show its result (a shared "
        "filesystem's delay) before its entrant is `lost` (or `cancelled`, where Slurm says so).",
    )
    wheelhouse: Path | None = Field(
        None, description="A folder of wheels for submissions' declared packages; the package index is not used."
    )
    trainer: dict[str, Any] = Field(default_factory=dict, description="Trainer settings for plugin entrants.")
    seed: int = 0
    gate: float = Field(
        benchmarks.GATE, ge=0, le=1, description="Utility must reach this fraction of the target's own."
    )
    eval_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_new_tokens: int = Field(256, ge=1)
    eval_device: str = Field("auto", description="Where the organiser evaluates: auto | cpu | cuda | cuda:N.")
    entrant_devices: str = Field(
        "all",
        pattern=r"^(all|cpu|\d+(,\d+)*)$",
        description="The GPUs an entrant's run may use, as CUDA_VISIBLE_DEVICES: all (the organiser's), cpu "
        "(none), or a list such as 0,1; with torchrun or deepspeed each of the nproc ranks takes one.",
    )
    official: bool = Field(
        False,
        description="Score as the organisers did (`unlearn evaluate --official`): bfloat16, 256 new tokens, "
        "open-instruct MMLU, their CSV round trip and evaluation_results.jsonl.",
    )

    @model_validator(mode="after")
    def _enough_devices(self) -> Competition:
        listed = 0 if self.entrant_devices in ("all", "cpu") else len(self.entrant_devices.split(","))
        if listed and self.launcher != "python" and self.nproc > listed:
            raise ValueError(
                f"entrant_devices = {self.entrant_devices!r} lists {listed} GPU(s) "
                f"for {self.nproc} ranks (nproc); list one per rank"
            )
        return self

    @model_validator(mode="after")
    def _deepspeed_file(self) -> Competition:
        if not re.fullmatch(r"zero[0-3]", self.deepspeed) and not Path(self.deepspeed).is_file():
            raise ValueError(f"deepspeed: {self.deepspeed}: neither a preset (zero0..zero3) nor a file")
        return self

    @model_validator(mode="after")
    def _official_preset(self) -> Competition:
        if self.official:
            from unlearn.evaluator.official import PRESET

            for field, key in (("eval_dtype", "dtype"), ("max_new_tokens", "max_new_tokens")):
                if field in self.model_fields_set and getattr(self, field) != PRESET[key]:
                    raise ValueError(
                        f"official = true fixes {field} = {PRESET[key]!r} (the organisers'); remove {field}"
                    )
            self.eval_dtype, self.max_new_tokens = PRESET["dtype"], PRESET["max_new_tokens"]
        return self

    def expand(self, host: PluginHost) -> list[Entrant]:
        """The entrants, with "all" and the string forms resolved; names must be unique."""
        found: list[Entrant] = []
        for i, item in enumerate(self.entrants):
            if isinstance(item, Entrant):
                found.append(item)
            elif item == "all":
                found += [
                    Entrant(name=n, plugin=n)
                    for n, e in sorted(host.methods.items())
                    if e.kind == "loss" and not any(x.name == n for x in found)
                ]
            elif item.startswith("recipe:"):
                found.append(Entrant(name=f"recipe_{item[7:]}", recipe=item[7:]))
            elif item.endswith(".py"):
                found.append(Entrant(name=Path(item).stem, submission=Path(item)))
            elif item.endswith((".toml", ".yaml", ".yml", ".json")):
                found.append(Entrant(name=f"recipe_{Path(item).stem}", recipe=item))
            elif "/" in item:  # a folder submission: "team_a/" or a path
                found.append(Entrant(name=Path(item).name, submission=Path(item)))
            elif re.fullmatch(_NAME, item):
                found.append(Entrant(name=item, plugin=item))  # installed or not: see `check_installed`
            else:
                raise ConfigError(
                    f"entrants[{i}]: {item!r} is not a plugin name, a recipe, a .py submission or a folder"
                )
        names = [e.name for e in found]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"entrants: names used twice: {dupes}; give them distinct names")
        return found


def check_installed(entrants: list[Entrant], host: PluginHost) -> None:
    """Every method these entrants name is installed, as the right kind; else one line saying how
    to install it. Run on the entrants that will run, so a competition file naming a plugin this
    machine lacks still runs its other entrants (``--entrant``)."""
    for entrant in entrants:
        if entrant.plugin is None:
            continue
        for name, kinds in ((entrant.plugin, ("loss",)), *((w, ("parameters", "post-process")) for w in entrant.with_)):
            if name not in host.methods:
                package = "unlearn-plugin-" + name.replace("_", "-")
                raise ConfigError(
                    f"entrant {entrant.name!r}: method {name!r} is not installed (install its plugin, e.g. "
                    f"`pip install {package}`, or leave the entrant out with --entrant)"
                )
            host.method(name, kinds=kinds)


def load_competition(
    path: Path, overrides: dict[str, Any] | None = None, edit: Callable[[dict[str, Any]], Any] | None = None
) -> Competition:
    """Read a competition file; relative paths (entrants' files too) are relative to it, and every
    path comes back absolute and resolved (an override's relative to the working folder): the
    entrants and the evaluations run in folders of their own, and the cache keys hold the paths,
    which must not depend on where the command was started."""
    path = path.resolve()
    data = read_config_file(path)
    if edit is not None:
        edit(data)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    base = path.parent
    for key in ("mia", "utility", "data", "reference", "wheelhouse"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    if isinstance(data.get("entrants"), list):
        data["entrants"] = [_entrant_paths(item, base) for item in data["entrants"]]
    try:
        comp = Competition.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, source=str(path))) from None
    for holder in [comp, *(e for e in comp.entrants if isinstance(e, Entrant))]:
        for name, value in holder:
            if isinstance(value, Path):
                setattr(holder, name, value.resolve())
    if Path(comp.deepspeed).is_file():
        comp.deepspeed = str(Path(comp.deepspeed).resolve())
    return comp


def _entrant_paths(item: Any, base: Path) -> Any:
    """One item of ``entrants`` with its relative paths made relative to the competition file: a
    submission, recipe or config file, or a folder; in a table, the files it names that exist."""
    if isinstance(item, str) and not Path(item).is_absolute():
        if item.endswith((".py", ".toml", ".yaml", ".yml", ".json")) or "/" in item:
            return str((base / item).resolve())
    elif isinstance(item, dict):
        for key in ("submission", "recipe", "requirements"):
            value = item.get(key)
            if isinstance(value, str) and (base / value).exists():
                item[key] = str(base / value)
    return item


# The competition's settings that go to the benchmark's ``evaluate`` under another name.
EVAL_OPTIONS = {"mia": "mia", "utility": "utility", "official": "official", "reference": "reference"}
EVAL_OPTIONS |= {"eval_dtype": "dtype", "max_new_tokens": "max_new_tokens"}


def evaluation_options(comp: Competition, bench: Benchmark, installed: dict[str, Benchmark]) -> dict[str, Any]:
    """The options the organiser passes to ``bench.evaluate``, as its signature names them: the
    ones the competition set (the generation settings only when set, or fixed by ``official``;
    else the benchmark's own defaults), the device, and no progress bars. One line for a setting
    the benchmark does not take, or an input it requires that is missing."""
    for key in benchmarks.required(bench):
        if getattr(comp, key, None) is None:
            raise ConfigError(f"{key}: required for the {bench.name} benchmark")
    if not benchmarks.evaluates_rows(bench) and comp.data is None:
        raise ConfigError(f"data: required for the {bench.name} benchmark (its data folder)")
    chosen = comp.model_fields_set | ({"eval_dtype", "max_new_tokens"} if comp.official else set())
    given = {
        o: getattr(comp, f) for f, o in EVAL_OPTIONS.items() if f in chosen and getattr(comp, f) not in (None, False)
    }
    refused = benchmarks.untaken(bench.evaluate, given, installed)
    if refused is not None:
        field = next(f for f, o in EVAL_OPTIONS.items() if o == refused[0])
        takers = "/".join(refused[1]) or "no installed benchmark's"
        raise ConfigError(f"{field}: a {takers} setting; the {bench.name} benchmark does not take it")
    ours = {"progress": False, "device": comp.eval_device}  # the organiser's, passed where taken
    return given | benchmarks.options_for(bench.evaluate, ours)
