"""An engine instance must not outlive its daemon.

Two independent signals, because either alone has a gap: the kernel's
parent-death signal (PR_SET_PDEATHSIG) fires when the daemon dies even by
SIGKILL, and the daemon holds the write end of the instance's stdin, so EOF on
stdin means the daemon is gone (or deliberately let go) — that one also works
when the instance was started through an intermediate process.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != expected_parent:  # the parent died before prctl took effect
        os._exit(0)


async def wait_for_stdin_eof() -> None:
    """Return when the daemon's end of our stdin pipe is closed."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
