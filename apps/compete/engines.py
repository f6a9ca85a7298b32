"""Where entrants run: one after another here (``sequential``, the default), or as tasks of
submitit (Meta's launcher for Slurm, whose local executor runs tasks as processes of this
machine): ``local`` runs ``parallel`` entrants at once on this machine, each pinned to its own
share of the cores (and of the GPUs), ``slurm`` submits each entrant as a Slurm job with the
resources the competition's ``slurm`` table asks for, and Slurm places them.

Every task runs `entrant.run_entrant`, the same function the sequential runner calls, so the
statuses and the leaderboard are the same whichever engine ran them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearn import ConfigError

from .config import Competition
from .entrant import run_entrant


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
    """One entrant's run in a task (pickled by submitit): `run_entrant` within its ``slot``."""
    if slot is None:
        return run_entrant(*args)
    return run_entrant(*args, cores=slot.cores, devices=",".join(map(str, slot.gpus)) or "cpu")


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
        executor.update_parameters(timeout_min=timeout_min, slurm_array_parallelism=comp.parallel, **comp.slurm)
        jobs = []
        with executor.batch():  # one job array; Slurm runs `parallel` at once where they fit
            for key, args in tasks:
                jobs.append((key, executor.submit(run_task, args, None)))
        for key, _ in jobs:
            started(key)
        for key, job in jobs:
            yield key, job.result()
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


def _gpus(devices: str) -> list[int]:
    """The GPUs entrants may share out: ``entrant_devices``' list, or all of this machine's."""
    if devices == "cpu":
        return []
    if devices != "all":
        return [int(d) for d in devices.split(",")]
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
