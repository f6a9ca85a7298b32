"""Isolation for competition entrants: Linux namespaces and Landlock, both unprivileged.

``python sandbox.py --ro PATH ... --rw PATH ... -- COMMAND ...`` runs COMMAND restricted to
reading (and executing) under the ``--ro`` paths and writing under the ``--rw`` paths; every
process COMMAND starts inherits the restriction. Anything else (the organiser's evaluation, MIA
and utility data, other entrants' folders) cannot be opened. With ``--no-tcp`` (Landlock ABI 4+)
it can neither bind nor connect a TCP socket, except on ``--tcp-port`` ports. Signals to
processes outside the sandbox are blocked where the kernel supports it (Landlock ABI 6).

With ``--pid-namespace`` COMMAND runs in PID and mount namespaces of its own (inside a user
namespace where the organiser is not root) with a fresh ``/proc``: it sees its own processes only,
so neither the organiser's environment nor its command line (``/proc/PID/environ``, ``cmdline``)
can be read. With ``--net-namespace`` it also gets a network namespace holding only its own
loopback: no TCP or UDP reaches this machine's services or anything beyond. This process stays
outside and waits; a small init (PID 1 inside) forwards signals, reaps orphans, and ends with
COMMAND, which ends every process left in the namespace, and dies with this process if it is
killed. ``Protection.probe()`` says which of these the kernel allows.

Run as a file, not as ``-m unlearn.sandbox``, so the launcher does not import torch. Where the
kernel has no Landlock, ``abi()`` is 0 and the organiser falls back to a scrubbed environment
and a private working folder, and says so in the leaderboard.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on x86_64 and arm64
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
BIND_TCP, CONNECT_TCP = 1 << 0, 1 << 1  # network rights, ABI 4+
_CREATE_RULESET_VERSION = 1
_SCOPE_SIGNAL = 1 << 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi() -> int:
    """The kernel's Landlock ABI version, 0 if Landlock is unavailable."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(
            _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
        )
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _handled(version: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if version >= 2:
        rights |= REFER
    if version >= 3:
        rights |= TRUNCATE
    if version >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(read_only: list[str], read_write: list[str], tcp_ports: list[int] | None = None) -> int:
    """Restrict this process (and its future children) to the given paths, and with ``tcp_ports``
    (ABI 4+) TCP to binding and connecting on those ports only (``[]``: no TCP at all); returns the
    ABI used. Landlock's network rules name ports, not addresses, and cover TCP only."""
    version = abi()
    if version == 0:
        raise OSError("Landlock is not available on this kernel")
    if tcp_ports is not None and version < 4:
        raise OSError(f"Landlock ABI {version} has no network rules (4+ has)")
    libc = _libc()
    handled = _handled(version)
    net = BIND_TCP | CONNECT_TCP if tcp_ports is not None else 0
    attr = _RulesetAttr(handled, net, _SCOPE_SIGNAL if version >= 6 else 0)
    size = 24 if version >= 6 else 16 if version >= 4 else 8  # older kernels know only the first field(s)
    fd = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    for port in tcp_ports or []:
        rule = _NetPortAttr(net, port)
        if libc.syscall(_SYS_ADD_RULE, ctypes.c_int(fd), ctypes.c_int(_RULE_NET_PORT), ctypes.byref(rule), 0) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for TCP port {port}")
    reading = (EXECUTE | READ_FILE | READ_DIR | IOCTL_DEV) & handled
    for paths, rights in ((read_only, reading), (read_write, handled)):
        for path in paths:
            try:
                parent = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            allowed = rights if os.path.isdir(path) else rights & _FILE_RIGHTS
            rule = _PathBeneathAttr(allowed, parent)
            if (
                libc.syscall(
                    _SYS_ADD_RULE,
                    ctypes.c_int(fd),
                    ctypes.c_int(_RULE_PATH_BENEATH),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )
                < 0
            ):
                raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            os.close(parent)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(fd)
    return version


# unshare(2) flags, and what isolating /proc needs of mount(2)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 1 << 14, 1 << 18
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_PR_SET_PDEATHSIG = 1


def enter_namespaces(net: bool) -> None:
    """Unshare the PID and mount namespaces (and with ``net`` the network one) for the children
    this process starts. Not root: inside a user namespace of its own, with this user's uid and gid
    mapped to themselves (so files keep their owner). Raises OSError where the kernel refuses."""
    libc = _libc()
    flags = CLONE_NEWPID | CLONE_NEWNS | (CLONE_NEWNET if net else 0)
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        flags |= CLONE_NEWUSER
    if libc.unshare(ctypes.c_int(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare: {os.strerror(code)}")
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:  # setgroups first: no gid_map without it
                f.write(text)


def _mount_proc(net: bool) -> None:
    """In the new namespaces (as their PID 1): keep mounts from reaching the host's, put a fresh
    /proc over the host's (it lists this namespace's processes only), bring loopback up."""
    libc = _libc()
    if libc.mount(None, b"/", None, ctypes.c_ulong(_MS_REC | _MS_PRIVATE), None) != 0:
        raise OSError(ctypes.get_errno(), "mount: making / private failed")
    if libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(_MS_NOSUID | _MS_NODEV | _MS_NOEXEC), None) != 0:
        raise OSError(ctypes.get_errno(), "mount: a fresh /proc failed")
    if net:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            request = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


@dataclass(frozen=True)
class Protection:
    """What this kernel lets the organiser give each entrant: Landlock's ABI version (0: none), a
    PID namespace (the organiser's processes hidden) and a network namespace (loopback only)."""

    landlock: int
    pid: bool
    net: bool

    @classmethod
    def probe(cls) -> Protection:
        """Find out, each namespace tried in a throwaway child (a kernel, a container's seccomp
        profile or a distribution's AppArmor rules may refuse them to this user)."""
        found = {}
        for kind, flags in (("pid", []), ("net", ["--net-namespace"])):
            probe = [sys.executable, __file__, "--pid-namespace", *flags, "--", "/bin/sh", "-c", "exit 0"]
            try:
                done = subprocess.run(probe, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
                found[kind] = done.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                found[kind] = False
        return cls(abi(), found["pid"], found["pid"] and found["net"])

    def describe(self, network: str) -> str:
        """The leaderboard header's words for it, under the competition's ``network`` setting."""
        files = (
            f"Landlock ABI {self.landlock}: own folder, read-only system and model"
            if self.landlock
            else "environment and folder only (this kernel has no Landlock)"
        )
        if self.pid:
            processes = "own PID namespace (the organiser's processes hidden)"
        else:
            processes = "the organiser's processes visible under /proc (no PID namespace here)"
        words = f"{files}; {processes}"
        if network == "none":
            if self.net:
                words += "; network namespace with loopback only (no TCP or UDP out)"
            elif self.landlock >= 4:
                words += "; no TCP, UDP open (no network namespace here)"
            else:
                words += "; network open (Landlock here has no network rules, no network namespace)"
        return words


def _ports(spec: str) -> range:
    low, _, high = spec.partition("-")
    return range(int(low), int(high or low) + 1)


def _exit_as(status: int) -> None:
    """End this process the way a child with wait ``status`` ended (its code, or its signal)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _wait_for(child: int, forward: list[int], everyone: bool) -> None:
    """Wait for ``child`` (reaping any other child meanwhile), passing on the ``forward`` signals
    (to every process of the namespace when ``everyone``: this is its init); then end as it did."""

    def relay(sig: int, _frame: object) -> None:
        try:
            os.kill(-1 if everyone else child, sig)
        except ProcessLookupError:
            pass

    for sig in forward:
        signal.signal(sig, relay)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
        if pid == child:
            _exit_as(status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ro", action="append", default=[], help="Readable (and executable) path.")
    parser.add_argument("--rw", action="append", default=[], help="Readable and writable path.")
    parser.add_argument("--no-tcp", action="store_true", help="No TCP, except on the --tcp-port ports.")
    parser.add_argument("--tcp-port", action="append", default=[], help="A TCP port (or LOW-HIGH) allowed.")
    parser.add_argument("--pid-namespace", action="store_true", help="Own processes only, a fresh /proc.")
    parser.add_argument("--net-namespace", action="store_true", help="Loopback only (with --pid-namespace).")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    ports = [p for spec in args.tcp_port for p in _ports(spec)]
    relayed = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2]
    if args.pid_namespace:
        try:
            enter_namespaces(args.net_namespace)
        except OSError as exc:
            sys.exit(f"sandbox: no namespaces: {exc}")
        alive, held = os.pipe()  # this process holds `held` open while it lives
        init = os.fork()  # PID 1 of the new namespace
        if init:
            os.close(alive)
            _wait_for(init, relayed, everyone=False)
        os.close(held)
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # this sandbox gone (killed): the namespace ends
        if select.select([alive], [], [], 0)[0]:  # end of file: it went before the line above took effect
            os._exit(1)
        os.close(alive)
        try:
            _mount_proc(args.net_namespace)
        except OSError as exc:
            print(f"sandbox: {exc}", file=sys.stderr)
            os._exit(errno.EPERM)
    if args.ro or args.rw or args.no_tcp:
        restrict(args.ro, args.rw, ports if args.no_tcp else None)
    if not args.pid_namespace:
        os.execvp(command[0], command)
    child = os.fork()
    if child == 0:
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"sandbox: {command[0]}: {exc.strerror}", file=sys.stderr)
            os._exit(127)
    _wait_for(child, relayed, everyone=True)


if __name__ == "__main__":
    main()
