"""Crash points: kill the daemon and its engine instances with SIGKILL at a
chosen step boundary of a PDB lifecycle operation. For the crash tests
(tests/lifecycle/test_crash.py); inert unless the environment asks.

Every multi-step operation calls reached(op, label, subject) at each step
boundary (after a file is staged, after the catalog commit, after the
rename, ...). `op` names the operation and its variant: create, drop,
clone_hot, clone_snapshot, clone_metadata_only, unplug_keep, unplug_move,
plug_copy, plug_in_place; `subject` what the request named (the new PDB's
name for create, clone and plug; the PDB id for unplug and drop), so a trace
tells concurrent runs of one op apart. The environment is read once, when this module is imported
(daemon start):

    RUSTYMT_CRASHPOINT unset or empty   reached() is one test of a module
                                        global and a return: nothing else
    RUSTYMT_CRASHPOINT=trace            record every boundary passed
    RUSTYMT_CRASHPOINT=op:n[,op:n...]   record, and the thread that reaches
                                        the n-th boundary of op (counted from
                                        1 over the daemon's life) parks
                                        there; once every listed op is
                                        parked, the daemon SIGKILLs every
                                        process it started (its engine
                                        instances, children first) and then
                                        itself.
    RUSTYMT_CRASHPOINT_TRACE=<file>     where to record: one line per
                                        boundary, "<op> <n> <subject> <label>
                                        <unix time>", and "park <op> <n>
                                        <subject> <label>" when parked
                                        (O_APPEND writes: complete lines
                                        survive the kill)

Parking instead of dying at once lets one daemon life stop several
operations at chosen points and kill them all at one instant, so one
restart checks recovery of all of them. A parked operation makes no further
progress, so the kill finds it exactly at its boundary. Boundaries are only
ever reached on worker threads (never the event loop's) and outside catalog
transactions, so parked threads hold no lock another operation needs.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time


def _parse(value: str) -> dict[str, int] | None:
    """{op: n} (empty: trace only); None when crash points are off."""
    value = value.strip()
    if not value:
        return None
    if value == "trace":
        return {}
    armed = {}
    for item in value.split(","):
        op, _, n = item.strip().rpartition(":")
        if not op or not n.isdigit() or int(n) < 1:
            raise ValueError(f"RUSTYMT_CRASHPOINT: {item!r} is not <op>:<n> with n >= 1")
        armed[op] = int(n)
    return armed


_ARMED = _parse(os.environ.get("RUSTYMT_CRASHPOINT", ""))
ACTIVE = _ARMED is not None
_TRACE = os.environ.get("RUSTYMT_CRASHPOINT_TRACE") if ACTIVE else None
_lock = threading.Lock()
_counts: dict[str, int] = {}
_parked: set[str] = set()


def reached(op: str, label: str, subject: str = "-") -> None:
    """A step boundary of op: nothing unless crash points are on (see the module doc)."""
    if not ACTIVE:
        return
    _reached(op, label, subject)


async def areached(op: str, label: str, subject: str = "-") -> None:
    """reached() from a coroutine: the boundary is passed on a worker thread, never the event loop's."""
    if ACTIVE:
        await asyncio.to_thread(_reached, op, label, subject)


def steps(op: str, subject: str):
    """reached() bound to one run of op: step(label)."""
    return lambda label: reached(op, label, subject)


def _record(line: str) -> None:
    if _TRACE:
        fd = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _reached(op: str, label: str, subject: str) -> None:
    assert asyncio._get_running_loop() is None, f"crash point {op}/{label} reached on the event loop"
    with _lock:
        n = _counts[op] = _counts.get(op, 0) + 1
        _record(f"{op} {n} {subject} {label} {time.time():.6f}\n")
        if _ARMED.get(op) != n:
            return
        _record(f"park {op} {n} {subject} {label}\n")
        _parked.add(op)
        if _parked >= set(_ARMED):
            kill_everything()
    threading.Event().wait()  # parked: the kill comes when the last listed op parks


def descendants(pid: int) -> list[int]:
    """Every living process below pid, children before their own children (from /proc)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])  # fields after "(comm)": state, ppid
        parents.setdefault(ppid, []).append(int(name))
    found, frontier = [], [pid]
    while frontier:
        children = [child for parent in frontier for child in parents.get(parent, [])]
        found += children
        frontier = children
    return found


def kill_everything() -> None:
    """SIGKILL every process this daemon started, then the daemon: no handler, no cleanup runs."""
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)
