"""``unlearn tune``: an Optuna study over a method's settings, each trial one ``unlearn.engine.run`` whose
signals (``trainer.score_steps`` on the rows being unlearned) give the pruner its intermediate
values and the objective its final one.

The study lives in an RDB (``OUT/study.db``, SQLite, unless ``storage`` names another database), so
a killed study resumes where it stopped (a trial cut short is retried once its heartbeat is stale,
from its run's last checkpoint), and several processes or machines can share it. Trials run in
``jobs`` worker processes, each pinned to its own cores with a matching torch thread count.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from transformers import TrainerCallback

from unlearn import (
    Config,
    ConfigError,
    RunError,
    check_output,
    load_rows,
    resolve_split,
    write_json,
    write_jsonl,
    write_text,
)
from unlearn.engine import (
    Expression,
    PluginHost,
    UnlearnError,
    apply_override,
    benchmarks,
    build_config,
    get_host,
    mark,
    run,
)

from .space import Dimension, search_space

SETTINGS_FILE = "tune.json"
KIND = "tuning study"
WORKER_ERROR = "unlearn tune worker: "  # how a worker's last log line gives its error
MAX_FAILED = 3  # a worker stops after this many failed trials in a row (the error is not the drawn settings)
HEARTBEAT_S, GRACE_S = 5, 15  # a trial whose process stopped beating this long ago is failed and retried


class Instance(Config):
    """One more tuning instance: a model to unlearn and its benchmark folder."""

    model: str = Field(description="The model folder (e.g. that instance's target).")
    data: str = Field(description="Its benchmark folder.")


class TuneSettings(Config):
    """One study: the run to tune, the space, the objective and how trials run."""

    base: dict[str, Any] = Field(description="The run config every trial starts from (RunConfig fields).")
    trials: int = Field(20, ge=1, description="Finished trials (completed or pruned) the study aims at.")
    jobs: int = Field(1, ge=1, description="Trials at once on this machine, each on its own cores.")
    storage: str | None = Field(None, description="An RDB URL shared by processes/machines; default OUT/study.db.")
    study: str = Field("unlearn", description="The study's name in the storage.")
    objective: str | None = Field(
        None, description="An expression of the final step's signals to optimise (None: the benchmark's default)."
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="None: the benchmark's default objective's direction, else maximize."
    )
    constraints: list[str] | None = Field(
        None,
        description="Expressions that must hold for a trial to count as feasible (None: the benchmark's "
        "default, its utility gate).",
    )
    report_epochs: float = Field(
        2.0, gt=0, description="Generation-based signals (and a report to the pruner) every this many epochs."
    )
    prune: bool = Field(True, description="Median pruning on the objective's intermediate values.")
    startup_trials: int = Field(5, ge=0, description="Random trials before TPE models the space and the pruner acts.")
    seed: int = Field(0, description="Seed of the sampler.")
    space: dict[str, Any] = Field(
        default_factory=dict, description="Ranges by path (trainer.X, config.METHOD.X), or false to fix a field."
    )
    keep_models: bool = Field(False, description="Keep every trial's model (default: only its results).")
    instances: list[Instance] = Field(
        default_factory=list,
        description="More tuning instances beside the base's model and data: every trial runs on each, the "
        "objective is its mean over all of them and each constraint must hold on every one (settings that "
        "fit one instance's noise are not what generalises).",
    )


def constraint_value(expr: Expression, scope: dict[str, float]) -> float:
    """Optuna's form of a constraint: <= 0 when it holds. ``a >= b`` gives b - a, ``a <= b`` a - b
    (how far from holding), anything else 0 or 1."""
    body = ast.parse(expr.text.strip(), mode="eval").body
    if (
        isinstance(body, ast.Compare)
        and len(body.ops) == 1
        and isinstance(body.ops[0], ast.GtE | ast.Gt | ast.LtE | ast.Lt)
    ):
        left = Expression(ast.unparse(body.left), expr.field)(scope)
        right = Expression(ast.unparse(body.comparators[0]), expr.field)(scope)
        gap = right - left if isinstance(body.ops[0], ast.GtE | ast.Gt) else left - right
        return float(gap) if gap != 0 or isinstance(body.ops[0], ast.GtE | ast.LtE) else 1e-12
    return 0.0 if expr(scope) else 1.0


class Study:
    """A study's settings resolved against the installed plugins: its space, expressions, storage."""

    def __init__(self, settings: TuneSettings, out: Path, host: PluginHost | None = None) -> None:
        self.settings, self.out, self.host = settings, Path(out), host or get_host()
        self.config = build_config({**settings.base, "output_dir": str(self.out / "trials")}, source="tune: base")
        self.space: dict[str, Dimension] = search_space(self.host, self.config.methods(), settings.space)
        # What is tuned: as given, or the benchmark's defaults (`unlearn.engine.benchmarks.tuning`)
        objective, direction, constraints = benchmarks.tuning(self.host.benchmark(self.config.trainer.eval_benchmark))
        self.goal = settings.objective or objective
        self.direction = settings.direction or (direction if settings.objective is None else "maximize")
        self.goals = constraints if settings.constraints is None else settings.constraints
        self.objective = Expression(self.goal, "objective")
        self.constraints = [Expression(c, f"constraints[{i}]") for i, c in enumerate(self.goals)]
        self.url = settings.storage or f"sqlite:///{self.out / 'study.db'}"

    def check_signals(self) -> set[str]:
        """The benchmark's signal names; the objective and constraints must use only those."""
        from transformers import AutoTokenizer

        if self.config.data is None:
            raise ConfigError("tune: the base run needs a `data` folder (the signals are read from it)")
        benchmark = self.host.benchmark(self.config.trainer.eval_benchmark)
        if not callable(getattr(benchmark, "signals", None)):
            raise ConfigError(f"tune: the benchmark {benchmark.name!r} gives no training signals to tune on")
        tokenizer = AutoTokenizer.from_pretrained(self.config.tokenizer or self.config.model)
        names, _ = benchmark.signals(Path(self.config.data), "train", tokenizer, 1)
        for expr in [self.objective, *self.constraints]:
            expr.check(set(names))
        for i, other in enumerate(self.settings.instances):
            found, _ = benchmark.signals(Path(other.data), "train", tokenizer, 1)
            if not set(names) <= set(found):
                raise ConfigError(f"tune: instances[{i}]: {other.data} lacks signals {sorted(set(names) - set(found))}")
        return set(names)

    def load(self) -> Any:
        """The Optuna study (created on first use), with this study's sampler and pruner."""
        import warnings

        import optuna
        from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, retries
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = RDBStorage(
            self.url,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
        )
        # Constraints come from each trial (Trial.set_constraint), which TPE reads. Workers (and a
        # resumed study) draw from their own seeds, or parallel workers would draw the same settings.
        key = f"{self.settings.seed}/{os.environ.get('UNLEARN_TUNE_WORKER', '')}/{self._existing()}"
        seed = zlib.crc32(key.encode())
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.settings.startup_trials)
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=self.settings.startup_trials)
            if self.settings.prune
            else optuna.pruners.NopPruner()
        )
        study = optuna.create_study(
            storage=storage,
            study_name=self.settings.study,
            direction=self.direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        mine = self.settings.model_dump(mode="json")
        theirs = study.user_attrs.get("unlearn_tune")
        if theirs is None:
            study.set_user_attr("unlearn_tune", mine)
        elif _same(theirs) != mine:
            raise ConfigError(
                f"study {self.settings.study!r} in {self.url} was started with other settings; "
                "give the same ones to resume or join it, or another --study name"
            )
        return study

    def _existing(self) -> int:
        """Trials already in the storage (0 before the study exists)."""
        import optuna

        try:
            return len(optuna.load_study(study_name=self.settings.study, storage=self.url).trials)
        except KeyError:
            return 0

    def counted(self, study: Any) -> int:
        """Trials that count towards ``trials``: finished, completed or pruned. Each worker checks
        before it starts one, so parallel workers may finish a few more than ``trials``."""
        from optuna.trial import TrialState

        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    @functools.cache  # noqa: B019 - one Study per process, a handful of folders
    def steps_per_epoch(self, forget: Path) -> int:
        """Optimiser steps per epoch (forget items over the batch), the cadence of the reports."""
        t = self.config.trainer
        rows = len(load_rows(resolve_split(forget, "forget")))
        method = self.host.methods[self.config.method]
        per_row = (self.config.alternate.per_row or method.alternates_per_row) if method.alternate else 1
        return max(1, math.ceil(rows * per_row / (t.batch_size * t.gradient_accumulation_steps)))

    def trial_config(self, params: dict[str, Any], folder: Path, instance: int = 0) -> Any:
        """The run config of one trial on one instance (0: the base's model and data; k: the k-th of
        ``instances``): the base, the drawn settings, and the signals it reports."""
        data = copy.deepcopy(self.settings.base)
        for path, value in params.items():
            apply_override(data, path, value)
        forget = self.config.forget or self.config.data
        if instance:
            other = self.settings.instances[instance - 1]
            data |= {"model": other.model, "data": other.data}
            for key in ("tokenizer", "forget", "retain"):
                data.pop(key, None)  # the instance's own, from its folders
            forget = Path(other.data)
        every = max(1, round(self.settings.report_epochs * self.steps_per_epoch(forget)))
        trainer = {"score_steps": every, "eval_split": "train", "eval_rows": 10**9, "progress": False}
        for key, value in trainer.items():
            apply_override(data, f"trainer.{key}", value)
        data["output_dir"] = str(folder / ("model" if not instance else f"model-{instance}"))
        return build_config(data, source=f"tune: trial settings {params}")

    def objective_fn(self, trial: Any) -> float:
        """Run one trial on every instance; its value is the mean of the objective at their last
        steps, each constraint's gap the worst over them. The pruner follows the first instance."""
        import optuna

        params = {d.path: d.suggest(trial) for d in self.space.values()}
        if "folder" not in trial.user_attrs:  # a retry of a trial cut short inherits it, and resumes its run
            trial.set_user_attr("folder", str(self.out / "trials" / f"{trial.number:04d}"))
        folder = Path(trial.user_attrs["folder"])
        started = time.time()
        results, pruned = [], False
        for instance in range(1 + len(self.settings.instances)):
            config = self.trial_config(params, folder, instance)
            # the pruner's intermediate values are the first instance's (one value per step)
            reporters = [Reporter(trial, self.objective, self.settings.prune)] if instance == 0 else []
            done = folder / f"instance-{instance}.json"  # a retry keeps the instances already run
            if not done.is_file():
                output = config.output_dir
                if not (output / "unlearn_run.json").is_file():  # else: finished before the process was cut
                    output = run(config, host=self.host, callbacks=reporters)  # a retry resumes its checkpoint
                curve = json.loads((output / "unlearn_run.json").read_text())["monitor"]["curve"]
                scope = {**{f"initial_{k}": v for k, v in curve[0].items()}, **curve[-1]}
                write_json(
                    done,
                    {
                        "model": str(config.model),
                        "value": float(self.objective(scope)),
                        "constraints": [constraint_value(c, scope) for c in self.constraints],
                        "pruned": any(r.pruned for r in reporters),
                        "final": curve[-1],
                        "initial": curve[0],
                        "curve": curve,
                    },
                )
                if not self.settings.keep_models:
                    shutil.rmtree(output)
            results.append(json.loads(done.read_text(encoding="utf-8")))
            pruned = results[-1]["pruned"]
            if pruned:
                break  # pruned on the first instance: the others are not run
        value = statistics.mean(r["value"] for r in results)
        constraints = [max(r["constraints"][i] for r in results) for i in range(len(self.constraints))]
        summary = {
            "number": trial.number,
            "params": params,
            "value": value,
            "constraints": constraints,
            "feasible": all(c <= 0 for c in constraints),
            "pruned_at": results[0]["final"]["step"] if pruned else None,
            "final": results[0]["final"],
            "initial": results[0]["initial"],
            "wall_s": round(time.time() - started, 1),
            "folder": str(folder),
        }
        if self.settings.instances:
            summary["instances"] = [{k: v for k, v in r.items() if k != "curve"} for r in results]
        for key in ("constraints", "feasible", "final", "wall_s", "pruned_at"):
            trial.set_user_attr(key, summary[key])
        for i, gap in enumerate(constraints):
            trial.set_constraint(f"c{i}", gap)
        write_json(folder / "trial.json", summary | {"curve": results[0]["curve"]})
        if pruned:
            raise optuna.TrialPruned(f"pruned at step {summary['pruned_at']}")
        return value


class Reporter(TrainerCallback):
    """A trainer callback reporting the objective at each evaluation with the generation-based
    signals to the trial, and stopping the run when the pruner says so."""

    monitor: Any = None  # the run's monitor, set by unlearn.engine.run

    def __init__(self, trial: Any, objective: Expression, prune: bool) -> None:
        self.trial, self.objective, self.prune, self.pruned = trial, objective, prune, False

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        values = {k.removeprefix("eval_"): v for k, v in (logs or {}).items() if k.startswith("eval_")}
        if state.global_step == 0 or self.monitor is None or not values:
            return
        initial = {f"initial_{k}": v for k, v in self.monitor.curve()[0].items()}
        scope = {**initial, **values}
        if not self.objective.names <= set(scope):
            return  # a cheap evaluation: the objective needs the generation-based signals
        self.trial.report(float(self.objective(scope)), state.global_step)
        if self.prune and state.global_step < state.max_steps and self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True


def _same(saved: dict[str, Any]) -> dict[str, Any]:
    """Saved settings as this version dumps them: a field added since has its default, so a study
    started before it resumes."""
    try:
        return TuneSettings.model_validate(saved).model_dump(mode="json")
    except ValueError:
        return saved


def prepare(settings: TuneSettings, out: Path, overwrite: bool = False) -> Study:
    """Check the settings, create or reuse ``out`` (resuming the study it holds when the settings
    are the same), and return the study. Every check comes before anything is written, so a
    refused command leaves no folder that would then refuse the corrected one."""
    config = build_config({**settings.base, "output_dir": str(out / "trials")}, source="tune: base")
    inputs = [config.model, config.tokenizer, config.data, config.forget, config.retain]
    for i, other in enumerate(settings.instances):
        if not Path(other.data).is_dir() or not Path(other.model).is_dir():
            raise ConfigError(f"tune: instances[{i}]: {other.model} and {other.data} must be folders")
        inputs += [Path(other.model), Path(other.data)]
    out = Path(out).resolve()
    study = Study(settings, out)  # the space, the objective and the constraints, checked
    study.check_signals()
    saved = out / SETTINGS_FILE
    if saved.is_file() and not overwrite:
        previous = json.loads(saved.read_text(encoding="utf-8"))
        if _same(previous) != settings.model_dump(mode="json"):
            raise ConfigError(f"{out}: holds a study with other settings; give the same ones to resume, or --overwrite")
        check_output(out, KIND, inputs, overwrite=None)  # the same kind, still no input inside it
    else:
        check_output(out, KIND, inputs, overwrite=overwrite)
        if out.exists():
            shutil.rmtree(out)  # --overwrite of a study this command wrote
        out.mkdir(parents=True)
        mark(out, KIND)
        write_json(saved, settings.model_dump(mode="json"))
    return study


def core_groups(jobs: int) -> list[list[int]]:
    """Disjoint sets of this process's cores, one per job (as even as they divide)."""
    cores = sorted(os.sched_getaffinity(0))
    if jobs > len(cores):
        raise ConfigError(f"--jobs {jobs}: this process may use {len(cores)} core(s); each job needs one")
    size, extra = divmod(len(cores), jobs)
    groups, start = [], 0
    for j in range(jobs):
        end = start + size + (1 if j < extra else 0)
        groups.append(cores[start:end])
        start = end
    return groups


def _die_with_parent() -> None:
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a killed study leaves no worker


def run_workers(study: Study, progress: bool = True) -> None:
    """Start ``jobs`` workers (``python -m unlearn.tune.worker OUT``) on disjoint cores and wait,
    showing one bar of finished trials."""
    groups = core_groups(study.settings.jobs)
    logs = study.out / "logs"
    logs.mkdir(exist_ok=True)
    optuna_study = study.load()
    if study.counted(optuna_study) >= study.settings.trials:
        return
    procs = []
    for j, cores in enumerate(groups):
        threads = str(len(cores))
        env = {**os.environ, "UNLEARN_TUNE_CORES": ",".join(map(str, cores)), "OMP_NUM_THREADS": threads}
        env["UNLEARN_TUNE_WORKER"] = str(j)
        env["MKL_NUM_THREADS"] = threads
        log = (logs / f"worker-{j}.log").open("a")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "unlearn.tune.worker", str(study.out)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=study.settings.trials, desc="trials", unit="trial")
    while any(p.poll() is None for p in procs):
        time.sleep(2.0)
        if bar is not None:
            _update_bar(bar, optuna_study)
    if bar is not None:
        _update_bar(bar, optuna_study)
        bar.close()
    failed = [j for j, p in enumerate(procs) if p.returncode != 0]
    if failed:
        tail = (logs / f"worker-{failed[0]}.log").read_text(errors="replace").strip().splitlines()[-3:]
        if tail and tail[-1].startswith(WORKER_ERROR):  # the worker's own error, one line
            raise RunError(f"tune worker {failed[0]}: {tail[-1].removeprefix(WORKER_ERROR)}")
        raise RunError(f"tune worker {failed[0]} failed (exit {procs[failed[0]].returncode}): {' | '.join(tail)}")


def _update_bar(bar: Any, study: Any) -> None:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if len(trials) == bar.n:
        return
    bar.n = min(len(trials), bar.total)
    best = best_trial(study)
    if best is not None:
        bar.set_postfix(best=f"{best.value:.3f} (#{best.number})")
    bar.refresh()


def worker(out: Path) -> None:
    """One worker: pin to the cores it was given, then run trials until the study has enough."""
    import optuna
    import torch

    cores = os.environ.get("UNLEARN_TUNE_CORES")
    if cores:
        os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
        torch.set_num_threads(len(cores.split(",")))
    settings = TuneSettings.model_validate_json((Path(out) / SETTINGS_FILE).read_text(encoding="utf-8"))
    study = Study(settings, Path(out))
    optuna_study = study.load()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    failed: list[str] = []  # this worker's failures in a row: a fault every trial meets ends it

    def objective(trial: Any) -> float:
        try:
            value = study.objective_fn(trial)
        except UnlearnError as exc:
            failed.append(str(exc))
            raise
        except optuna.TrialPruned:
            failed.clear()
            raise
        failed.clear()
        return value

    while study.counted(optuna_study) < settings.trials:
        optuna_study.optimize(objective, n_trials=1, catch=(UnlearnError,))
        if len(failed) >= MAX_FAILED:
            raise RunError(f"{MAX_FAILED} trials in a row failed; the last: {failed[-1]}")


def best_trial(study: Any) -> Any | None:
    """The best completed trial whose constraints hold, or None."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("feasible")]
    if not done:
        return None
    pick = max if study.direction.name == "MAXIMIZE" else min
    return pick(done, key=lambda t: t.value)


def best_config(study: Study, params: dict[str, Any]) -> dict[str, Any]:
    """The base run config with the best settings, as a plain run config (no output folder)."""
    data = copy.deepcopy(study.settings.base)
    for path, value in params.items():
        apply_override(data, path, value)
    return data


def write_outputs(study: Study, optuna_study: Any, holdout: dict[str, Any] | None = None) -> dict[str, Any]:
    """``best.toml`` (a recipe with the best settings), ``best_run.toml`` (a run config),
    ``trials.jsonl``, ``report.md`` and the PNGs; returns the summary written to ``summary.json``."""
    import tomli_w
    from optuna.trial import TrialState

    out = study.out
    trials = optuna_study.get_trials(deepcopy=False)
    rows = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value if t.state == TrialState.COMPLETE else None,
            "feasible": t.user_attrs.get("feasible"),
            "params": t.params,
            "pruned_at": t.user_attrs.get("pruned_at"),
            "wall_s": t.user_attrs.get("wall_s"),
        }
        for t in trials
    ]
    write_jsonl(out / "trials.jsonl", rows)
    best = best_trial(optuna_study)
    summary: dict[str, Any] = {
        "study": study.settings.study,
        "storage": study.url,
        "objective": study.goal,
        "direction": study.direction,
        "constraints": study.goals,
        "space": {p: d.describe() for p, d in study.space.items()},
        "trials": {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")},
        "best": None,
        "holdout": holdout,
    }
    if best is not None:
        run_config = best_config(study, best.params)
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "final": best.user_attrs.get("final"),
        }
        write_text(out / "best_run.toml", tomli_w.dumps({**run_config, "output_dir": "unlearned"}))
        recipe = {
            "name": "tuned_" + "_".join(study.config.methods()),
            "summary": f"{study.config.method} with settings found by unlearn tune (trial {best.number}, "
            f"{study.goal} {best.value:.3f})",
            "notes": f"Study {study.settings.study!r} in {study.url}: "
            + ", ".join(f"{n} {state}" for state, n in summary["trials"].items() if n)
            + " trials; space: "
            + "; ".join(f"{p} {d}" for p, d in summary["space"].items())
            + ".",
            "defaults": {
                k: v
                for k, v in run_config.items()
                if k not in ("model", "tokenizer", "data", "forget", "retain", "method")
            },
            "runs": [{"name": "tuned", "method": study.config.method}],
        }
        write_text(out / "best.toml", tomli_w.dumps(recipe))
    summary["figures"] = _figures(optuna_study, out)
    write_json(out / "summary.json", summary)
    write_text(out / "report.md", report_markdown(summary, rows))
    return summary


def _figures(optuna_study: Any, out: Path) -> list[str]:
    """Optimisation history and parameter importance as PNGs (importance needs two completed trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState

    written = []
    completed = optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = [("history.png", ovm.plot_optimization_history)]
    if len(completed) >= 2 and len({tuple(sorted(t.params.items())) for t in completed}) >= 2:
        plots.append(("importance.png", ovm.plot_param_importances))
    for name, plot in plots:
        try:
            axes = plot(optuna_study)
        except (ValueError, RuntimeError):  # e.g. importance of a parameter that never varied
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        tmp = out / f".{name}.tmp.png"
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(figure)
        os.replace(tmp, out / name)
        written.append(name)
    return written


def report_markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# unlearn tune: study {summary['study']}",
        "",
        f"Objective: {summary['direction']} `{summary['objective']}` at the last step, subject to "
        + ", ".join(f"`{c}`" for c in summary["constraints"])
        + f". Storage: `{summary['storage']}` (open it with `optuna-dashboard {summary['storage']}`).",
        "",
        "Space: " + "; ".join(f"`{p}` {d}" for p, d in summary["space"].items()) + ".",
        "",
        "Trials: " + ", ".join(f"{n} {s}" for s, n in summary["trials"].items() if n) + ".",
        "",
    ]
    best = summary["best"]
    if best:
        lines += [
            f"**Best feasible trial: #{best['number']}, {summary['objective']} = {best['value']:.4f}**, with "
            + ", ".join(
                f"`{k} = {v:.4g}`" if isinstance(v, float) else f"`{k} = {v}`" for k, v in best["params"].items()
            )
            + ". Run it again with `unlearn recipe run best.toml --model M --data D -o OUT`"
            " (or `unlearn run -c best_run.toml`).",
            "",
        ]
    else:
        lines += ["No trial was both complete and feasible.", ""]
    if summary.get("holdout"):
        lines += holdout_markdown(summary["holdout"])
    params = sorted({p for r in rows for p in r["params"]})
    lines += ["| trial | state | value | feasible | " + " | ".join(params) + " | wall s |"]
    lines += ["| --- " * (len(params) + 5) + "|"]
    for r in rows:
        value = f"{r['value']:.4f}" if r["value"] is not None else ""
        cells = [
            f"{r['params'][p]:.4g}" if isinstance(r["params"].get(p), float) else str(r["params"].get(p, ""))
            for p in params
        ]
        state = r["state"] + (f" at step {r['pruned_at']}" if r.get("pruned_at") else "")
        lines += [
            f"| {r['number']} | {state} | {value} | {r['feasible']} | "
            + " | ".join(cells)
            + f" | {r['wall_s'] or ''} |"
        ]
    for name in summary.get("figures", []):
        lines += ["", f"![{name}]({name})"]
    return "\n".join(lines) + "\n"


def holdout_markdown(holdout: dict[str, Any]) -> list[str]:
    first = next(iter(holdout["runs"].values()), [])
    keys = [k for k in (first[0] if first else {}) if k not in ("seed", "gate")]  # the benchmark's headline
    lines = [f"Held-out instances (seeds {holdout['seeds']}; each its own benchmark and target), mean +- std:", ""]
    lines += ["| settings | " + " | ".join(keys) + " | gate passed |", "| --- " * (len(keys) + 2) + "|"]
    for name, runs in holdout["runs"].items():
        cells = []
        for key in keys:
            values = [r[key] for r in runs if r[key] is not None] or [math.nan]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} +- {std:.3f}")
        gates = sum(bool(r["gate"]) for r in runs)
        lines += [f"| {name} | " + " | ".join(cells) + f" | {gates}/{len(runs)} |"]
    return [*lines, ""]


def holdout(
    study: Study,
    params: dict[str, Any],
    seeds: list[int],
    size: str,
    instances: Path | None = None,
    target_settings: list[str] | None = None,
    say: Any = print,
) -> dict[str, Any]:
    """Re-run the best settings and the untuned base on fresh instances of the embedded benchmark,
    each evaluated officially against its own target, and return per-seed results of both.

    An instance (``INSTANCES/seed-S/{data,target,eval_target}``, default ``OUT/holdout``) is one
    synthetic benchmark and its target, built with ``unlearn data synth`` and ``unlearn target
    build`` as any user would, once: several studies may share a folder of instances. The runs and
    their evaluations go to ``OUT/holdout/seed-S/{tuned,untuned}``; finished ones are reused."""
    benchmark = study.host.benchmark(study.config.trainer.eval_benchmark)
    instances = Path(instances or study.out / "holdout")
    results: dict[str, list[dict[str, Any]]] = {"tuned": [], "untuned": []}
    configs = {"tuned": best_config(study, params), "untuned": copy.deepcopy(study.settings.base)}
    for seed in seeds:
        data, target, baseline = build_instance(instances / f"seed-{seed}", seed, size, benchmark, target_settings, say)
        where = study.out / "holdout" / f"seed-{seed}"
        for name, config in configs.items():
            model, evaluation = where / name, where / f"eval_{name}"
            if not (evaluation / "evaluation_results.json").is_file():
                say(f"held-out seed {seed}: {name} settings")
                data_ = {**config, "model": str(target), "data": str(data), "output_dir": str(model)}
                data_.pop("tokenizer", None)
                data_.setdefault("trainer", {})["progress"] = False
                if not (model / "unlearn_run.json").is_file():
                    run(build_config(data_, source=f"tune: held-out {name}"), host=study.host)
                options = benchmarks.options_for(benchmark.evaluate, {"baseline": baseline, "progress": False})
                benchmark.evaluate(model, data, evaluation, **options)
                shutil.rmtree(model)
            found = json.loads((evaluation / "evaluation_results.json").read_text(encoding="utf-8"))
            before = json.loads((baseline / "evaluation_results.json").read_text(encoding="utf-8"))
            results[name].append(
                {"seed": seed, **{k: found.get(k) for k in benchmark.headline}, "gate": _gate(benchmark, found, before)}
            )
    return {"seeds": seeds, "size": size, "instances": str(instances), "runs": results}


def _gate(benchmark: Any, found: dict[str, Any], before: dict[str, Any]) -> bool | None:
    """Whether the unlearned model kept its utility: the benchmark's own verdict where it gives one
    (LUME's ``utility_gate``), else its ``utility`` number at least ``benchmarks.GATE`` x the target's."""
    if isinstance(found.get("utility_gate"), dict):
        return found["utility_gate"].get("pass")
    key = getattr(benchmark, "utility", None)
    if key is None or found.get(key) is None or before.get(key) is None:
        return None
    return found[key] >= benchmarks.GATE * before[key]


def build_instance(
    where: Path, seed: int, size: str, benchmark: Any, target_settings: list[str] | None, say: Any = print
) -> tuple[Path, Path, Path]:
    """``where/{data,target,eval_target}``: the embedded benchmark for ``seed``, its target and the
    target's evaluation, built by the CLI unless there already."""
    data, target, baseline = where / "data", where / "target", where / "eval_target"
    cli = [sys.executable, "-m", "unlearn"]
    if not (data / "unlearn_output.json").is_file():  # published whole, or not at all
        say(f"seed {seed}: writing the benchmark")
        synth = [*cli, "data", "synth", "--out", str(data), "--seed", str(seed), "--size", size]
        _call([*synth, "--benchmark", benchmark.name], where)
    if not (target / "config.json").is_file():
        say(f"seed {seed}: training its target")
        sets = [a for s in target_settings or [] for a in ("--set", s)]
        _call(
            [*cli, "target", "build", "--data", str(data), "--out", str(target), "--set", f"seed={seed}", *sets], where
        )
    if not (baseline / "evaluation_results.json").is_file():
        benchmark.evaluate(target, data, baseline, **benchmarks.options_for(benchmark.evaluate, {"progress": False}))
    return data, target, baseline


def _call(command: list[str], where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RunError(f"{' '.join(command[2:5])} failed: {tail[0]}")
