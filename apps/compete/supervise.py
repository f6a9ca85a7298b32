"""Running one entrant's command as its own process group under a time limit; none of its
processes survive it."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path


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


def supervise(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    log: Path,
    time_limit: float,
    grace: float,
    token: str,
    stall: float = 300.0,
    poll: float = 0.25,
) -> Outcome:
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
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
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
        return Outcome(
            status, f"killed after {wall:.0f} s; it had used almost no CPU for {stall:g} s", wall, mb, proc.returncode
        )
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
