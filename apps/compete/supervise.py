"""Running one entrant's command as its own process group under a time limit; none of its
processes survive it."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


@dataclass
class Limits:
    """Per-entrant resource limits (None: none). ``memory``: bytes of RSS summed over the entrant's
    processes, polled; ``disk``: bytes written into its folder, polled, and no single file larger
    (``RLIMIT_FSIZE``); ``processes``: how many it may run at once, polled, with ``RLIMIT_NPROC``
    as a backstop against a fork faster than the poll (ignored for root); ``overhead``: processes of
    the sandbox around the run, not counted against ``processes``."""

    memory: int | None = None
    disk: int | None = None
    processes: int | None = None
    cores: list[int] | None = None  # CPU affinity, inherited by every process of the run
    overhead: int = 0

    def apply(self) -> None:
        """In the child, before exec: the kernel-enforced parts, and its death with the supervisor
        (killed by the out-of-memory killer, or with its Slurm job), so that no run outlives it."""
        import ctypes
        import resource

        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if self.cores:
            os.sched_setaffinity(0, self.cores)
        if self.disk is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.disk, self.disk))
        if self.processes is not None:  # RLIMIT_NPROC counts all of this user's processes
            mine = sum(1 for e in os.listdir("/proc") if e.isdigit() and _owner(e) == os.getuid())
            allowed = mine + self.processes + self.overhead
            resource.setrlimit(resource.RLIMIT_NPROC, (allowed, allowed))


def _owner(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


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


# A training loss logged as NaN or infinite: HF's `{'loss': nan, ...}`, `loss: nan`, `loss=inf`, ...
_NAN_LOSS = re.compile(rb"""loss['"]?\s*[:=]\s*['"]?[-+]?(nan|inf)\b""", re.IGNORECASE)
# What torchrun raises when a worker failed: the worker's own exception is the one to report.
_LAUNCHER_ERRORS = {"ChildFailedError"}
# What harness.py prints when it, not the submission, ends the run; only these forms are taken, so
# an entrant cannot put its own text (the forget set) into the leaderboard this way.
_HARNESS = re.compile(r"^unlearn harness: (no unlearn\(\) in [\w.-]+\.py|[\w.-]+\.py cannot be imported as a module)$")


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
    limits: Limits | None = None,
) -> Outcome:
    """Run ``command`` as its own process group under a time limit; none of its processes survive.

    A run idle for ``stall`` seconds (under 5% of one core) is ended early as ``hang``; one still
    busy at the limit as ``timeout``; one past a `Limits` value as ``memory``, ``disk`` or
    ``processes``; one whose log shows a NaN loss as ``nan``.
    """
    import subprocess

    watch = _Watch(cwd, log, token, limits or Limits(), time_limit, stall)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=watch.limits.apply,
        )
        try:
            while proc.poll() is None:
                if watch.check(proc.pid) is not None:
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
    return watch.outcome(proc.returncode)


class _Watch:
    """What `supervise` watches while the command runs: its processes' memory, CPU and count, the
    disk it writes, its log's losses, and the clock; the first limit crossed decides the status."""

    def __init__(self, cwd: Path, log: Path, token: str, limits: Limits, time_limit: float, stall: float) -> None:
        self.cwd, self.log, self.token, self.limits = cwd, log, token, limits
        self.time_limit, self.stall = time_limit, stall
        self.started, self.checked_disk, self.over = time.time(), 0.0, ""
        self.peak, self.read = 0, 0  # `read`: how much of the log has been searched for NaN losses
        self.cpu_seen: list[tuple[float, float]] = []
        self.cpu_by_pid: dict[int, float] = {}  # processes that ended keep their last reading
        self.status: str | None = None

    def check(self, pgid: int) -> str | None:
        """One look at the running command: the status that ends it, or None."""
        limits = self.limits
        members = _members(pgid, self.token)
        rss = sum(rss for _, rss in members.values())
        self.peak = max(self.peak, rss)
        now = time.time()
        if limits.disk is not None and now - self.checked_disk > 1.0:
            self.checked_disk, written = now, _folder_bytes(self.cwd)
            if written > limits.disk:
                self.over = f"disk: {written / 2**30:.2f} GB written, over the {limits.disk / 2**30:g} GB limit"
        if limits.memory is not None and rss > limits.memory:
            self.over = f"memory: {rss / 2**30:.2f} GB in use, over the {limits.memory / 2**30:g} GB limit"
        running = len(members) - limits.overhead
        if limits.processes is not None and running > limits.processes:
            self.over = f"processes: {running} running, over the limit of {limits.processes}"
        self.cpu_by_pid.update({pid: cpu for pid, (cpu, _) in members.items()})
        self.cpu_seen.append((now, sum(self.cpu_by_pid.values())))
        self.read, nan = _nan_loss(self.log, self.read)
        if self.over:
            self.status = self.over.split(":")[0]
        elif nan:
            self.status = "nan"
        elif now - self.started > self.stall and _idle(self.cpu_seen, self.stall):
            self.status = "hang"
        elif now - self.started > self.time_limit:
            self.status = "hang" if _idle(self.cpu_seen, min(self.stall, self.time_limit / 2)) else "timeout"
        return self.status

    def outcome(self, code: int) -> Outcome:
        """What happened, once the command's processes are gone."""
        wall = round(time.time() - self.started, 2)
        mb = round(self.peak / 2**20, 1)
        reason = {
            "hang": f"killed after {wall:.0f} s; it had used almost no CPU for {self.stall:g} s",
            "nan": f"the log shows a NaN or infinite loss; ended after {wall:.0f} s",
            "timeout": f"killed at the {self.time_limit:g} s limit; it was still working",
        }
        if self.over:
            return Outcome(self.status, f"{self.over.split(': ', 1)[1]}; ended after {wall:.0f} s", wall, mb, code)
        if self.status is not None:
            return Outcome(self.status, reason[self.status], wall, mb, code)
        if code != 0:
            status, why = _failure(self.log.read_text(errors="replace"), self.limits, code)
            return Outcome(status, why, wall, mb, code)
        return Outcome("ok", "", wall, mb, 0)


def _failure(text: str, limits: Limits, code: int) -> tuple[str, str]:
    """The status and reason of a command that exited with ``code`` != 0, from its log ``text``."""
    # Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE fails with EFBIG (errno 27) instead
    if limits.disk is not None and (
        code == -signal.SIGXFSZ or "SIGXFSZ" in text or "[Errno 27] File too large" in text
    ):
        return "disk", f"a file grew past the {limits.disk / 2**30:g} GB limit"
    if limits.processes is not None and "[Errno 11] Resource temporarily unavailable" in text:
        return "processes", f"could not start another process under the limit of {limits.processes}"
    if limits.memory is not None and re.search(r"^(\[\w+\]:\s?)?MemoryError\b", text, flags=re.MULTILINE):
        return "memory", f"out of memory (MemoryError) under the {limits.memory / 2**30:g} GB limit"
    if "non-finite loss" in text or "NonFiniteLossError" in text:
        return "nan", "the loss became NaN or infinite"
    return "crash", f"exit code {code}: {_error_kind(text)}"


def _nan_loss(log: Path, start: int) -> tuple[int, bool]:
    """Search the log's new bytes for a NaN or infinite loss; returns where to search from next
    (the last line may be incomplete, so it is searched again)."""
    try:
        with log.open("rb") as f:
            f.seek(start)
            chunk = f.read()
    except OSError:
        return start, False
    complete = chunk.rfind(b"\n") + 1
    return start + complete, bool(_NAN_LOSS.search(chunk[:complete]))


def _idle(cpu_seen: list[tuple[float, float]], window: float) -> bool:
    """Whether the processes used under 5% of one core over the last ``window`` seconds."""
    end_t, end_cpu = cpu_seen[-1]
    start_t, start_cpu = next(((t, c) for t, c in cpu_seen if t >= end_t - window), cpu_seen[0])
    return (end_cpu - start_cpu) / max(end_t - start_t, 1e-9) < 0.05


def _error_kind(log: str) -> str:
    """The harness's own message if it ended the run, else the exception class of the last
    traceback (after any launcher prefix such as ``[rank0]: ``), never its message (it may quote
    the data)."""
    log = re.sub(r"^\[(?:rank|default)\d+\]:\s?", "", log, flags=re.MULTILINE)
    mine = [m[1] for m in map(_HARNESS.match, log.splitlines()) if m]
    if mine:
        return mine[-1]
    names = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))\b", log, flags=re.MULTILINE)
    names = [n.rsplit(".", 1)[-1] for n in names]
    workers = [n for n in names if n not in _LAUNCHER_ERRORS]  # the launcher's own report comes last
    if names:
        return (workers or names)[-1]
    if re.search(r"^error: ", log, flags=re.MULTILINE):
        return "unlearn error (see the log)"
    return "no traceback (see the log)"
