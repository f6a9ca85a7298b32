"""Filesystem isolation for competition entrants with Linux Landlock (unprivileged, kernel 5.13+).

``python sandbox.py --ro PATH ... --rw PATH ... -- COMMAND ...`` restricts itself to reading
(and executing) under the ``--ro`` paths and writing under the ``--rw`` paths, then execs
COMMAND; every process COMMAND starts inherits the restriction. Anything else (the organiser's
evaluation, MIA and utility data, other entrants' folders) cannot be opened. With ``--no-tcp``
(Landlock ABI 4+) it can neither bind nor connect a TCP socket, except on ``--tcp-port`` ports.
Signals to processes outside the sandbox are blocked where the kernel supports it (ABI 6).

Run as a file, not as ``-m unlearn.sandbox``, so the launcher does not import torch. Where the
kernel has no Landlock, ``abi()`` is 0 and the organiser falls back to a scrubbed environment
and a private working folder, and says so in the leaderboard.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

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


def _ports(spec: str) -> range:
    low, _, high = spec.partition("-")
    return range(int(low), int(high or low) + 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ro", action="append", default=[], help="Readable (and executable) path.")
    parser.add_argument("--rw", action="append", default=[], help="Readable and writable path.")
    parser.add_argument("--no-tcp", action="store_true", help="No TCP, except on the --tcp-port ports.")
    parser.add_argument("--tcp-port", action="append", default=[], help="A TCP port (or LOW-HIGH) allowed.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    ports = [p for spec in args.tcp_port for p in _ports(spec)]
    restrict(args.ro, args.rw, ports if args.no_tcp else None)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
