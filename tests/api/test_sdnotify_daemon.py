"""The daemon speaks sd_notify as systemd's Type=notify + WatchdogSec expect.

systemd is not PID 1 in this container, so the test plays systemd's part: it
binds the notify datagram socket, starts a real `rustymt serve` with
NOTIFY_SOCKET and WATCHDOG_USEC set as systemd would, and reads what arrives.
"""
from __future__ import annotations

import socket

from tests.daemon import Daemon

WATCHDOG_USEC = 200_000  # pings every 0.1 s


def _messages(sock: socket.socket) -> dict[str, str]:
    text = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in text.splitlines())


def test_ready_watchdog_and_stopping(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        daemon = Daemon.start(str(tmp_path / "data"), env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        try:
            ready = _messages(sock)
            assert ready["READY"] == "1"
            assert ready["MAINPID"] == str(daemon.process.pid)
            assert str(daemon.port) in ready.get("STATUS", "")
            # Sent once serving: the API answers.
            assert daemon.request("GET", "/healthz", token=None).status == 200
            assert {"WATCHDOG": "1"} in [_messages(sock) for _ in range(2)]
        finally:
            code = daemon.stop()
        assert code == 0
        seen = []
        while "STOPPING" not in (seen[-1] if seen else {}):
            seen.append(_messages(sock))  # watchdog pings may still precede it
        assert seen[-1]["STOPPING"] == "1"
