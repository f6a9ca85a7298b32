"""Scoring an entrant's model in a process of its own, so that what the model does to the
evaluation (a generation that runs out of memory, a crash in native code, a hang) ends that
evaluation and not the competition.

The organiser's process writes what to evaluate into the entrant's folder, runs
``python -m unlearn.compete.evaluation SPEC`` under `supervise` (no time limit; the stall check
and the competition's ``eval_memory_gb``), and reads back the results file, or the one line of
``evaluation_status.json`` that says why there is none. The child calls the same evaluation
functions with the same arguments as an in-process evaluation, so the scores are the same.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from unlearn import RunError, write_json, write_text
from unlearn.engine import UnlearnError, get_host

from .supervise import Limits, supervise

SPEC, STATUS, LOG = "evaluation_spec.json", "evaluation_status.json", "evaluation.log"
EVALUATION_ERROR = "evaluation_error.txt"  # beside result.json: the traceback, for the organiser only
_PATHS = ("mia", "utility", "reference")  # options that are paths
_MACHINE = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}  # errors of the organiser's machine


class Unscorable(Exception):
    """The evaluation of an entrant's model ended without results: ``reason`` is one line for the
    leaderboard; ``retry``: it may be the machine's doing (killed from outside, out of memory with
    no limit set), so the next ``unlearn compete`` evaluates the model again."""

    def __init__(self, reason: str, retry: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.retry = reason, retry


def evaluate_apart(
    benchmark: str,
    model: Path,
    data: Path,
    out: Path,
    folder: Path,
    options: dict[str, Any],
    memory_gb: float | None,
    stall_s: float,
    grace_s: float,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` into ``out`` in a supervised child process (files in
    ``folder``); returns the results written, or raises `Unscorable`, or `RunError` for a failure
    of the organiser's machine (a full disk)."""
    from unlearn.evaluator.evaluate import RESULTS

    # absolute: the child runs in ``folder``
    options = {k: Path(v).absolute() if k in _PATHS and v is not None else v for k, v in options.items()}
    places = {"model": str(model.absolute()), "data": str(data.absolute()), "out": str(out.absolute())}
    spec = {"benchmark": benchmark, **places, "options": options}
    write_text(folder / SPEC, json.dumps(spec, default=str, indent=2))  # paths as strings
    for name in (STATUS, LOG):
        (folder / name).unlink(missing_ok=True)
    token = secrets.token_hex(8)
    env = {**os.environ, "UNLEARN_ENTRANT_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    limits = Limits(memory=int(memory_gb * 2**30) if memory_gb else None)
    command = [sys.executable, "-m", "unlearn.compete.evaluation", str(folder / SPEC)]
    outcome = supervise(command, folder, env, folder / LOG, math.inf, grace_s, token, stall_s, limits=limits)
    if outcome.status == "ok":
        return json.loads((out / RESULTS).read_text())
    status = json.loads((folder / STATUS).read_text()) if (folder / STATUS).is_file() else {}
    if "machine" in status:
        raise RunError(f"evaluating {model}: {status['machine']} (the organiser's machine; the competition stops)")
    if "organiser" in status:
        raise RunError(f"evaluating {model}: {status['organiser']} (the organiser's settings; the competition stops)")
    if "error" in status:
        raise Unscorable(status["error"], retry=status.get("retry", False))
    if outcome.status in ("memory", "hang"):
        raise Unscorable(f"{outcome.status}: {outcome.reason}")
    code = outcome.exit_code
    if code is not None and code < 0:  # a signal: the kernel's OOM killer is the usual sender
        name = signal.Signals(-code).name
        raise Unscorable(f"killed by {name} after {outcome.wall_time_s:.0f} s (out of memory?)", retry=True)
    raise Unscorable(f"exit code {code}, see {LOG}")


def main(argv: list[str] | None = None) -> None:
    """The child: evaluate as the spec says; on failure write the status line and exit non-zero."""
    spec_file = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_file.read_text())
    folder = spec_file.parent
    options = {k: Path(v) if k in _PATHS and v is not None else v for k, v in spec["options"].items()}
    model, data, out = Path(spec["model"]), Path(spec["data"]), Path(spec["out"])
    missing = [(k, v) for k, v in (("data", data), *options.items()) if k in ("data", *_PATHS) and v and not v.exists()]
    if missing:  # the organiser's inputs, which every entrant's evaluation reads: not the model's doing
        key, path = missing[0]
        write_json(folder / STATUS, {"organiser": f"{key}: {path}: not found (working folder {os.getcwd()})"})
        sys.exit(1)
    try:
        get_host().benchmark(spec["benchmark"]).evaluate(model, data, out, **options)
    except BaseException as exc:  # noqa: BLE001 - every failure gets its line
        write_text(folder / EVALUATION_ERROR, traceback.format_exc())
        if isinstance(exc, UnlearnError):  # our own messages name files and rows by id
            status = {"error": str(exc)[:300]}
        elif isinstance(exc, MemoryError):
            status = {"error": "out of memory (MemoryError)", "retry": True}
        elif isinstance(exc, OSError) and exc.errno in _MACHINE:  # a full disk, a failing one
            status = {"machine": f"{type(exc).__name__}: {exc}"[:300]}
        else:  # another's message may quote the private rows
            status = {"error": f"{type(exc).__name__}, see {EVALUATION_ERROR}"}
        write_json(folder / STATUS, status)
        sys.exit(1)


if __name__ == "__main__":
    main()
