"""Organiser mode: run registered plugins, recipes and SemEval-style submissions on private data,
each isolated and time-limited, evaluate them, and publish a leaderboard.

Every entrant runs as its own process group in ``OUT/entrants/NAME/work/``, which holds only
copies of the forget and retain rows (``forget/forget.jsonl`` + ``.parquet``, the same for
retain), its code, a private HOME and TMPDIR, and ``output/`` for the model. It is given the
target model's path and nothing else: no organiser environment variables, no evaluation, MIA
or utility data, and (where the kernel has Landlock, see ``sandbox.py``) no way to open any
other file; in PID and network namespaces of its own where the kernel allows, it sees none of the
organiser's processes and reaches no network beyond its own loopback. The time limit ends the
whole group (SIGTERM, then SIGKILL after a grace period), and every process that carries the
entrant's token is killed when it ends, so none survives.

The organiser's process then checks the output (safetensors weights only, loadable without
remote code, finite) and scores it with the evaluator, in a process of its own
(``evaluation.py``), against the target's own evaluation, done once. Results are cached per
entrant under a key of everything that affects them, so a re-run after a crash or with an added
entrant does only the missing work.
"""

from __future__ import annotations

import json
import signal
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unlearn import ConfigError, RunError, check_output, load_rows, write_json, write_text
from unlearn.engine import PluginHost, UnlearnError, benchmarks, get_host, mark

from .cache import RESULT_FILE, cache_key, hash_files, model_stamp, read_result
from .config import Competition, Entrant, check_installed, evaluation_options
from .engines import run_all
from .entrant import readable_paths, submission_entry, write_split
from .evaluation import EVALUATION_ERROR, Unscorable, evaluate_apart
from .leaderboard import CANCELLED, LOST, SCORED, UNSCORABLE, write_leaderboard
from .sandbox import Protection

# -- the competition ----------------------------------------------------------------------------


class Reporter:
    """Progress: one line per entrant as it starts and ends, and an overall bar."""

    def __init__(self, total: int, say: Callable[[str], None] | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._say = say
        self._progress = None
        if say is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
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


def run_competition(
    comp: Competition,
    host: PluginHost | None = None,
    only: list[str] | None = None,
    rerun: list[str] | None = None,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Run every entrant not already done, evaluate, and write the leaderboard; returns its folder."""
    host = host or get_host()
    bench = host.benchmark(comp.benchmark)
    eval_args = evaluation_options(comp, bench, {n: b for n, (_, b) in host.benchmarks.items()})
    entrants = _chosen(comp, host, only)
    model = comp.model.resolve()
    if not (model / "config.json").is_file():
        raise ConfigError(f"model: {comp.model}: not a model folder (no config.json)")
    forget, retain = load_rows(comp.forget, "forget"), load_rows(comp.retain, "retain")
    inputs = [comp.model, comp.forget, comp.retain, comp.mia, comp.utility, comp.data, comp.reference]
    inputs += [e.submission or (_recipe_file(e) if e.recipe else None) for e in entrants] + [comp.wheelhouse]
    out = check_output(comp.output_dir, "competition", inputs, overwrite=None)  # resumed: results are cached
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "competition")
    rows = out / "organiser" / "data"
    write_split(forget, rows, "forget")
    write_split(retain, rows, "retain")
    protection = Protection.probe()
    data_key, eval_key = _keys(comp, model, rows)
    report = Reporter(len(entrants), say)
    previous = _stop_on_sigterm()
    try:
        # A benchmark of rows scores the private rows (written above); another its own data folder.
        eval_data = rows if benchmarks.evaluates_rows(bench) else comp.data
        scoring = _Scoring(comp, bench, out, eval_data, eval_args, eval_key, report, entrants)  # type: ignore[arg-type]
        scoring.evaluate_target(model)
        tasks, readable = [], readable_paths()
        for entrant in entrants:
            run_key = _run_key(comp, entrant, data_key)
            if not scoring.served_from_cache(entrant, run_key, rerun or []):
                args = (comp, entrant, out / "entrants" / entrant.name, model, forget, retain, readable)
                tasks.append(((entrant, run_key), (*args, protection, out / "environments")))
        _run(comp, model, tasks, scoring)
    finally:
        report.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    results = [r for r in (read_result(out / "entrants" / e.name) for e in comp.expand(host)) if r]
    return write_leaderboard(comp, results, scoring.before, _isolation(comp, protection), out)


def _chosen(comp: Competition, host: PluginHost, only: list[str] | None) -> list[Entrant]:
    """The entrants to run (all, or those ``--entrant`` names), checked before any work."""
    entrants = comp.expand(host)
    if only:
        unknown = sorted(set(only) - {e.name for e in entrants})
        if unknown:
            raise ConfigError(f"--entrant {unknown}: not in this competition ({', '.join(e.name for e in entrants)})")
        entrants = [e for e in entrants if e.name in only]
    check_entrants(entrants, host)
    return entrants


def _isolation(comp: Competition, protection: Protection) -> str:
    """The leaderboard's line on how entrants were isolated and limited."""
    isolation = protection.describe(comp.network)
    limits = [f"{k} {v:g}" for k, v in (("memory GB", comp.memory_gb), ("disk GB", comp.disk_gb)) if v is not None]
    limits += [f"processes {comp.processes}"] if comp.processes is not None else []
    return isolation + (f"; limits: {', '.join(limits)}" if limits else "")


def _keys(comp: Competition, model: Path, rows: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cache keys of the private data (what every run depends on) and of the evaluation."""
    # The target is keyed by its files' sizes and times: hashing a 7B model at every start costs minutes.
    data_key = {
        "target": cache_key(model_stamp(model)),
        "forget": hash_files([rows / "forget.jsonl"]),
        "retain": hash_files([rows / "retain.jsonl"]),
    }
    eval_key = {
        **data_key,
        "benchmark": comp.benchmark,
        "data": hash_files([comp.data]) if comp.data else None,
        "reference": cache_key(model_stamp(comp.reference)) if comp.reference else None,
        "mia": hash_files([comp.mia]) if comp.mia else None,
        "utility": hash_files([comp.utility]) if comp.utility else None,
        "dtype": comp.eval_dtype,
        "max_new_tokens": comp.max_new_tokens,
        "official": comp.official,
        "device": comp.eval_device,
    }
    return data_key, eval_key


class _Scoring:
    """Scoring the entrants of one ``run_competition``: the target's evaluation, each entrant's (in
    a process of its own), its cached result and the progress lines."""

    def __init__(
        self,
        comp: Competition,
        bench: Any,
        out: Path,
        eval_data: Path,
        eval_args: dict[str, Any],
        eval_key: dict[str, Any],
        report: Reporter,
        entrants: list[Entrant],
    ) -> None:
        self.comp, self.bench, self.out, self.eval_data, self.eval_args = comp, bench, out, eval_data, eval_args
        self.eval_key, self.report = eval_key, report
        self.eval_memory_gb = comp.eval_memory_gb or comp.memory_gb
        # an entrant's scores and its gate verdict (the memory limit may decide whether it has scores)
        self.scored_key = cache_key({**eval_key, "gate": comp.gate, "eval_memory_gb": self.eval_memory_gb})
        # An unscorable verdict also keeps where the organiser's inputs were: one that a setting of the
        # organiser's caused (a path the evaluation could not find) is not served again once it is fixed.
        self.inputs = {k: str(getattr(comp, k)) for k in ("data", "reference", "mia", "utility") if getattr(comp, k)}
        self.baseline = out / "organiser" / "baseline"
        self.before: dict[str, Any] = {}
        self._tags = {e.name: f"[{i}/{len(entrants)}] {e.name}" for i, e in enumerate(entrants, start=1)}

    def tag(self, entrant: Entrant) -> str:
        return self._tags[entrant.name]

    def evaluate_target(self, model: Path) -> None:
        """The target's evaluation (the baseline every entrant is compared with), done once."""
        from unlearn.evaluator.evaluate import RESULTS

        key_file = self.out / "organiser" / "baseline_key.json"
        fresh = (self.baseline / RESULTS).is_file() and key_file.is_file()
        if not fresh or json.loads(key_file.read_text()) != self.eval_key:
            self.report.line("baseline: evaluating the target")
            self.bench.evaluate(model, self.eval_data, self.baseline, **self.eval_args)
            write_json(key_file, self.eval_key)
        else:
            self.report.line("baseline: cached")
        self.before = json.loads((self.baseline / RESULTS).read_text())

    def evaluate_entrant(self, model: Path, data: Path, out: Path, **options: Any) -> dict[str, Any]:
        """The same evaluation in a process of its own (`evaluation.py`): what an entrant's model
        does to it ends that evaluation, not the competition."""
        limits = (self.eval_memory_gb, self.comp.stall_s, self.comp.grace_s)
        return evaluate_apart(self.comp.benchmark, model, data, out, out.parent, options, *limits)

    def finish(self, entrant: Entrant, result: dict[str, Any]) -> None:
        """Score a finished run (where it has a model) and write its result."""
        folder = self.out / "entrants" / entrant.name
        if result["status"] in SCORED:
            args = (self.baseline, self.before, self.comp, self.eval_args, self.evaluate_entrant)
            result = _evaluate(result, folder, self.eval_data, *args)
            if not result.pop("retry", False):  # else evaluated again by the next `unlearn compete`
                result["eval_key"] = self.scored_key
            if result["status"] == UNSCORABLE:
                result["eval_inputs"] = self.inputs
        write_json(folder / RESULT_FILE, result)
        self.report.line(f"{self.tag(entrant)}: {_summary(result)}")
        self.report.advance()

    def served_from_cache(self, entrant: Entrant, run_key: str, rerun: list[str]) -> bool:
        """Whether the entrant's run is done already (then its evaluation too, where that is
        missing or stale); False when it must run."""
        cached = read_result(self.out / "entrants" / entrant.name)
        again = entrant.name in rerun or (cached or {}).get("status") in (CANCELLED, LOST)
        if not cached or cached.get("run_key") != run_key or again:
            return False
        fresh = cached.get("eval_key") == self.scored_key and (
            cached["status"] != UNSCORABLE or cached.get("eval_inputs") == self.inputs
        )
        if cached["status"] not in (*SCORED, UNSCORABLE) or fresh:
            self.report.line(f"{self.tag(entrant)}: cached, {_summary(cached)}")
            self.report.advance()
        else:  # the run is done; only its evaluation is missing or stale
            if cached["status"] == UNSCORABLE:  # as the run left it
                cached.update(status=cached.pop("run_status"), reason=cached.pop("run_reason"))
            self.finish(entrant, cached)
        return True


def _run(comp: Competition, model: Path, tasks: list, scoring: _Scoring) -> None:
    """Run the entrants' tasks on the competition's engine and score each as it ends (sequential)
    or once all have ended (so no evaluation competes with a run for cores)."""
    stamp = model_stamp(model)

    def started(key: tuple[Entrant, str]) -> None:
        entrant = key[0]
        scoring.report.line(f"{scoring.tag(entrant)} ({entrant.kind}, team {entrant.team_name}): started")

    ran = []
    for (entrant, run_key), result in run_all(comp, tasks, scoring.out / "engine", started):
        result.update(run_key=run_key, name=entrant.name, team=entrant.team_name, kind=entrant.kind)
        if model_stamp(model) != stamp:
            raise RunError(f"the target model {model} changed during entrant {entrant.name!r}; the competition stops")
        if comp.engine == "sequential":
            scoring.finish(entrant, result)
        else:
            write_json(scoring.out / "entrants" / entrant.name / RESULT_FILE, result)
            scoring.report.line(f"{scoring.tag(entrant)}: run ended, {result['status']}")
            ran.append((entrant, result))
    for entrant, result in ran:
        scoring.finish(entrant, result)


def _run_key(comp: Competition, entrant: Entrant, data_key: dict[str, Any]) -> str:
    """Everything that affects an entrant's run: a cached result with another key is run again."""
    return cache_key(
        {
            "entrant": entrant.model_dump(mode="json", by_alias=True),
            **data_key,
            "code": hash_files([entrant.submission]) if entrant.submission else None,
            "recipe": hash_files([_recipe_file(entrant)]) if entrant.recipe else None,
            "requirements": hash_files([entrant.requirements]) if isinstance(entrant.requirements, Path) else None,
            "wheelhouse": hash_files([comp.wheelhouse]) if comp.wheelhouse and entrant.requirements else None,
            "launcher": entrant.launcher or comp.launcher,
            "nproc": comp.nproc,
            "deepspeed": comp.deepspeed,
            "trainer": comp.trainer,
            "seed": comp.seed,
            "time_limit_s": comp.time_limit_s,
            "stall_s": comp.stall_s,
            "limits": [comp.network, comp.memory_gb, comp.disk_gb, comp.processes],
        }
    )


def check_entrants(entrants: list[Entrant], host: PluginHost) -> None:
    """Before any work: the plugins the entrants name are installed, and each submission has its
    entry file; one line naming the entrant otherwise."""
    check_installed(entrants, host)
    for entrant in entrants:
        if entrant.submission is not None:
            submission_entry(entrant)


def _stop_on_sigterm() -> Any:
    """Turn SIGTERM into an exception so the running entrant's processes are killed on the way out."""
    import threading

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, stop)


def _recipe_file(entrant: Entrant) -> Path:
    from unlearn.recipes import find_recipe

    return find_recipe(entrant.recipe)


def _summary(result: dict[str, Any]) -> str:
    if result["status"] not in SCORED:
        return f"{result['status']} ({result['reason']}) after {result['wall_time_s']:.0f} s"
    shown = ", ".join(f"{k} {v:.4g}" for k, v in (result.get("scores") or {}).items() if v is not None)
    gate = "" if result.get("gate") is None else f" (gate {'pass' if result['gate'] else 'FAIL'})"
    return f"{result['status']}, {shown}{gate}, {result['wall_time_s']:.0f} s"


def _evaluate(
    result: dict[str, Any],
    folder: Path,
    eval_data: Path,
    baseline: Path,
    before: dict[str, Any],
    comp: Competition,
    eval_args: dict[str, Any],
    evaluate_model: Callable,
) -> dict[str, Any]:
    """Score a finished entrant's model; one the evaluation fails on is UNSCORABLE, with the reason
    (the target was scored with the same settings, so the model is why) and the competition goes on."""
    model = folder / result.get("model", "work/output")
    run = {"run_status": result["status"], "run_reason": result.get("reason")}
    try:
        scores = evaluate_model(model, eval_data, folder / "evaluation", **eval_args)
    except Unscorable as exc:  # from the evaluation's own process, which wrote its traceback
        return {**result, **run, "status": UNSCORABLE, "reason": f"evaluation: {exc.reason}", "retry": exc.retry}
    except (MemoryError, OSError):
        raise  # the organiser's machine, not the entrant's model
    except Exception as exc:  # noqa: BLE001
        write_text(folder / EVALUATION_ERROR, traceback.format_exc())
        # our own messages name files and rows by id; another's may quote the data, so only its class
        why = str(exc)[:300] if isinstance(exc, UnlearnError) else f"{type(exc).__name__}, see {EVALUATION_ERROR}"
        return {**result, **run, "status": UNSCORABLE, "reason": f"evaluation: {why}"}
    (folder / EVALUATION_ERROR).unlink(missing_ok=True)  # from an earlier evaluation of this entrant
    bench = get_host().benchmark(comp.benchmark)
    key = getattr(bench, "utility", None)  # the gate: at least comp.gate x the target's utility
    utility, base = (scores.get(key), before.get(key)) if key else (None, None)
    gate = None if utility is None or base is None else utility >= comp.gate * base
    columns = benchmarks.columns(bench)
    result.update({column: scores.get(k) for column, k in columns.items()})
    result.update(scores={k: scores.get(k) for k in bench.headline}, utility=utility, gate=gate)
    result["final_score"] = scores.get(next(iter(columns.values())))  # what entrants are ranked by
    return result
