"""Where entrants run: one after another here (``sequential``, the default), or as tasks of
submitit (Meta's launcher for Slurm, whose local executor runs tasks as processes of this
machine): ``local`` runs ``parallel`` entrants at once on this machine, each pinned to its own
share of the cores (and of the GPUs), ``slurm`` submits each entrant as a Slurm job with the
resources the competition's ``slurm`` table asks for, and Slurm places them.

Every task runs `entrant.run_entrant`, the same function the sequential runner calls, so the
statuses and the leaderboard are the same whichever engine ran them. A Slurm job that ends without
its result (``scancel``; its wrapper killed, as by the out-of-memory killer; its node lost) becomes
the entrant's status, ``cancelled`` or ``lost``, within ``lost_after_s`` of leaving Slurm's queue,
and the competition carries on; the entrant's processes end with the job's (see ``supervise``).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearn import ConfigError

from .config import Competition
from .entrant import run_entrant
from .leaderboard import CANCELLED, LOST


@dataclass
class Slot:
    """A share of this machine: CPU cores (a matching thread count follows them) and GPUs."""

    cores: list[int]
    gpus: list[int]


def slots(parallel: int, gpus: list[int]) -> list[Slot]:
    """``parallel`` disjoint shares of this process's cores and of ``gpus`` (as even as they go; with
    fewer GPUs than slots, the slots without one run on the CPU)."""
    cores = sorted(os.sched_getaffinity(0))
    if parallel > len(cores):
        raise ConfigError(f"parallel = {parallel}: this machine has {len(cores)} core(s) to share")

    def part(items: list[int], i: int) -> list[int]:
        return items[i * len(items) // parallel : (i + 1) * len(items) // parallel]

    return [Slot(part(cores, i), part(gpus, i)) for i in range(parallel)]


def run_task(args: tuple[Any, ...], slot: Slot | None) -> dict[str, Any]:
    """One entrant's run in a task (pickled by submitit): `run_entrant` within its ``slot``. A
    SIGTERM to the task (``scancel``) ends the run (the entrant gets it too) as ``cancelled``."""
    cancelled: list[float] = []
    started = time.time()
    main = threading.current_thread() is threading.main_thread()  # where a handler can be set
    previous = signal.signal(signal.SIGTERM, lambda *_: cancelled.append(time.time())) if main else None
    try:
        if slot is None:
            result = run_entrant(*args)
        else:
            result = run_entrant(*args, cores=slot.cores, devices=",".join(map(str, slot.gpus)) or "cpu")
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if cancelled:
        reason = f"the job was cancelled (SIGTERM) after {cancelled[0] - started:.0f} s"
        result.update(status=CANCELLED, reason=reason, model=None)
    return result


def run_all(
    comp: Competition, tasks: list[tuple[Any, tuple[Any, ...]]], work: Path, started: Callable[[Any], None]
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Run ``tasks`` (a key, and `run_entrant`'s arguments) with the competition's engine; yield
    (key, result) as each ends. ``started(key)`` is called as each starts."""
    if comp.engine == "sequential":
        for key, args in tasks:
            started(key)
            yield key, run_entrant(*args)
        return
    import submitit

    timeout_min = int((comp.time_limit_s + comp.grace_s) / 60) + 30  # the task's own limit is the supervisor's
    if comp.engine == "slurm":
        # UNLEARN_SLURM_CLUSTER=local runs this same path on submitit's local executor (for tests)
        executor = submitit.AutoExecutor(work, cluster=os.environ.get("UNLEARN_SLURM_CLUSTER", "slurm"))
        requested = {"timeout_min": timeout_min, "slurm_array_parallelism": comp.parallel}
        if comp.memory_gb is not None:  # else Slurm gives each job the whole node's memory
            requested["mem_gb"] = math.ceil(comp.memory_gb) + 1  # the job's own Python beside the entrant
        executor.update_parameters(**(requested | comp.slurm))
        jobs = []
        with executor.batch():  # one job array; Slurm runs `parallel` at once where they fit
            for key, args in tasks:
                jobs.append((key, executor.submit(run_task, args, None)))
        for key, _ in jobs:
            started(key)
        yield from _awaited(jobs, comp.lost_after_s, slurm=executor.cluster == "slurm")
        return
    executor = submitit.LocalExecutor(work)
    executor.update_parameters(timeout_min=timeout_min)  # the entrant's own GPUs are set by `run_entrant`
    free, pending, running = slots(comp.parallel, _gpus(comp.entrant_devices)), list(tasks), []
    while pending or running:
        while pending and free:
            slot, (key, args) = free.pop(0), pending.pop(0)
            running.append((key, slot, executor.submit(run_task, args, slot)))
            started(key)
        done = [r for r in running if r[2].done()]
        if not done:
            time.sleep(0.5)
            continue
        for entry in done:
            running.remove(entry)
            free.append(entry[1])
            yield entry[0], entry[2].result()


# Slurm's states of a job that has ended (squeue lists them for a while after, MinJobAge)
_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}
_ENDED |= {"REVOKED", "SPECIAL_EXIT", "TIMEOUT"}


def _awaited(
    jobs: list[tuple[Any, Any]], lost_after_s: float, slurm: bool, poll: float = 2.0
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(key, result) of each submitit job as it ends. A job that ended without its result file
    (submitit says so, or with ``slurm`` squeue, which needs no accounting) and still has none
    ``lost_after_s`` later gives a `cancelled` or `lost` result instead of a wait forever."""
    submitted, pending, ended, listed = time.time(), list(jobs), {}, set()
    while pending:
        waiting = [job.job_id for _, job in pending if not job.paths.result_pickle.exists()]
        states = _slurm_states(waiting) if slurm and waiting else {}
        for key, job in list(pending):
            over = job.job_id not in waiting
            if not over:
                state = states.get(job.job_id, "UNKNOWN") if slurm else "UNKNOWN"
                if state is not None:
                    listed.add(job.job_id)
                forgotten = state is None and job.job_id in listed  # gone from squeue after MinJobAge
                if forgotten or state in _ENDED or job.done():
                    ended.setdefault(job.job_id, (time.time(), state))
                    over = time.time() - ended[job.job_id][0] > lost_after_s
            if over:
                pending.remove((key, job))
                yield key, _outcome(job, time.time() - submitted, ended.get(job.job_id, (0, None))[1])
        if pending:
            time.sleep(poll)


def _slurm_states(job_ids: list[str]) -> dict[str, str | None]:
    """Each job's state as one ``squeue`` call shows it (PENDING, RUNNING, CANCELLED, ...); None
    once Slurm forgot it (or never listed it); "UNKNOWN" when squeue cannot say (taken as queued)."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})  # every task of these arrays, one a line
    command = ["squeue", "--noheader", "--array", "--format=%i %T", f"--jobs={','.join(arrays)}"]
    try:
        listed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return dict.fromkeys(job_ids, "UNKNOWN")
    if listed.returncode != 0:  # "Invalid job id": ended and purged
        return dict.fromkeys(job_ids, None if "invalid job id" in listed.stderr.lower() else "UNKNOWN")
    shown = dict(line.split(maxsplit=1) for line in listed.stdout.splitlines() if len(line.split()) == 2)
    return {job_id: shown.get(job_id) for job_id in job_ids}


def _outcome(job: Any, waited: float, seen: str | None) -> dict[str, Any]:
    """The job's result, or the status of a job that ended without one (``seen``: the state squeue
    showed last, where accounting cannot say)."""
    from submitit.core.utils import FailedJobError

    def without_result(status: str, reason: str) -> dict[str, Any]:
        return {"status": status, "reason": reason, "wall_time_s": round(waited, 2), "exit_code": None}

    if job.paths.result_pickle.exists():
        try:
            return job.result()
        except FailedJobError as exc:  # run_entrant itself raised: its exception's class; the log has the rest
            kind = str(exc).strip().splitlines()[-1].split(":")[0] if str(exc).strip() else "an error"
            return without_result(LOST, f"the job failed in the organiser's code ({kind}); see {job.paths.stderr}")
    state = str(job.state)
    state = seen if state == "UNKNOWN" and seen else state
    if state.startswith("CANCELLED"):
        return without_result(CANCELLED, f"the Slurm job {job.job_id} was cancelled before it could report")
    return without_result(
        LOST,
        f"the job {job.job_id} ended without a result (state {state}): its wrapper was killed (out of "
        "memory?) or its node lost",
    )


def _gpus(devices: str) -> list[int]:
    """The GPUs entrants may share out: ``entrant_devices``' list, or all of this machine's."""
    if devices == "cpu":
        return []
    if devices != "all":
        return [int(d) for d in devices.split(",")]
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
