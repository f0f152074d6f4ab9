"""sd_notify(3) without libsystemd: tell systemd we are ready, alive or stopping.

systemd passes a datagram socket in $NOTIFY_SOCKET (a path, or "@name" for the
Linux abstract namespace) to a Type=notify service; the service sends newline-
separated VAR=value assignments to it. Without $NOTIFY_SOCKET (not under
systemd) every call is a no-op that returns False, so the daemon calls these
unconditionally. The watchdog interval comes from $WATCHDOG_USEC, honoured only
when $WATCHDOG_PID is unset or names this process (as sd_watchdog_enabled does).
"""
from __future__ import annotations

import os
import socket
from typing import Mapping


def _address(env: Mapping[str, str]) -> str | None:
    target = env.get("NOTIFY_SOCKET", "")
    if target.startswith("@"):
        return "\0" + target[1:]  # abstract namespace
    if target.startswith("/"):
        return target
    return None  # unset, or a transport we do not speak (vsock:)


# A datagram to a receiver whose queue is full blocks the sender. The daemon
# calls these from its event loop, so a send waits at most this long; a
# watchdog ping does not wait at all (the next one follows at interval/2).
SEND_TIMEOUT_SECONDS = 2.0


def notify(state: str, env: Mapping[str, str] | None = None, wait: bool = True) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=serving") to systemd; True when sent."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    payload = state.encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(SEND_TIMEOUT_SECONDS if wait else 0.0)
        try:
            sock.sendto(payload, address)
        except OSError:
            # systemd went away, is not reading, or the socket is not ours to
            # write; the service itself must keep running, so report, not raise.
            return False
    return True


def ready(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    lines = ["READY=1", f"MAINPID={os.getpid()}"]
    if status:
        lines.append(f"STATUS={_one_line(status)}")
    return notify("\n".join(lines), env)


def stopping(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    lines = ["STOPPING=1"]
    if status:
        lines.append(f"STATUS={_one_line(status)}")
    return notify("\n".join(lines), env)


def watchdog(env: Mapping[str, str] | None = None) -> bool:
    return notify("WATCHDOG=1", env, wait=False)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    return notify(f"STATUS={_one_line(text)}", env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when no watchdog is asked for."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


def _one_line(text: str) -> str:
    # A newline would start a new assignment systemd would try to interpret.
    return " ".join(text.splitlines())
