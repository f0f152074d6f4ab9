"""One round trip on a session thread's blocking socket: send the answer,
then wait for the client's next bytes.

`exchange(fd, out, inbuf, timeout)` is compiled in _speedups.pyx, where the
send and the receive share ONE release of the GIL (sendall() and recv() hand
it to the other session threads twice per query, and every hand-off back
costs a wait while 8 threads contend for it). `exchange_py` is the pure-Python
twin with the same contract; the tests run both.
"""
from __future__ import annotations

import os
import select
import socket


def exchange_py(fd: int, out, inbuf, timeout: float) -> bytes:
    """Send all of out, then return the next bytes received (b"" at end of
    stream; at most len(inbuf)). timeout < 0 waits forever, else
    socket.timeout; OSError when the connection failed. (Python ignores
    SIGPIPE, so a write to a closed peer raises instead of killing us.)"""
    view = memoryview(out)
    while view:
        view = view[os.write(fd, view):]
    if timeout >= 0:
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            raise socket.timeout("timed out")
    return os.read(fd, len(inbuf))


try:
    from ._speedups import exchange
except ImportError:  # not built: the twin does the same
    exchange = exchange_py
