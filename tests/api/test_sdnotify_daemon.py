"""The daemon speaks sd_notify as systemd's Type=notify + WatchdogSec expect.

systemd is not PID 1 in this container, so the test plays systemd's part: it
binds the notify datagram socket, reads it continuously (as systemd does; an
unread unix datagram queue holds only ~10 messages), starts a real
`rustymt serve` with NOTIFY_SOCKET and WATCHDOG_USEC set as systemd would, and
checks what arrives.
"""
from __future__ import annotations

import queue
import socket
import threading

from tests.daemon import Daemon

WATCHDOG_USEC = 200_000  # pings every 0.1 s
WAIT_SECONDS = 20


class FakeSystemd:
    """A notify socket drained by a thread into a queue of {VAR: value} messages."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: queue.Queue[dict[str, str]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                text = self.sock.recv(4096).decode()
            except OSError:  # closed
                return
            self.messages.put(dict(line.split("=", 1) for line in text.splitlines()))

    def next_with(self, variable: str) -> dict[str, str]:
        """The next message setting `variable` (others are skipped); fails after WAIT_SECONDS."""
        while True:
            message = self.messages.get(timeout=WAIT_SECONDS)
            if variable in message:
                return message

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(5)


def test_ready_watchdog_and_stopping(tmp_path):
    systemd = FakeSystemd(str(tmp_path / "notify"))
    try:
        daemon = Daemon.start(str(tmp_path / "data"),
                              env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        try:
            ready = systemd.next_with("READY")
            assert ready["READY"] == "1"
            assert ready["MAINPID"] == str(daemon.process.pid)
            assert str(daemon.port) in ready.get("STATUS", "")
            assert daemon.request("GET", "/healthz", token=None).status == 200  # serving
            assert systemd.next_with("WATCHDOG")["WATCHDOG"] == "1"
            assert systemd.next_with("WATCHDOG")["WATCHDOG"] == "1"  # and again: it is periodic
        finally:
            code = daemon.stop()
        assert code == 0
        assert systemd.next_with("STOPPING")["STOPPING"] == "1"
    finally:
        systemd.close()
