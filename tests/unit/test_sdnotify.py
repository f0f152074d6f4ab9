"""sd_notify over a real AF_UNIX datagram socket, as systemd provides it."""
from __future__ import annotations

import os
import socket
import uuid

import pytest

from rustymt import sdnotify


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, {"NOTIFY_SOCKET": path}


def test_ready_status_watchdog_stopping_arrive_as_datagrams(notify_socket):
    sock, env = notify_socket
    assert sdnotify.ready("serving on 127.0.0.1:8420", env=env)
    assert sock.recv(4096).decode().split("\n") == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=serving on 127.0.0.1:8420"]
    assert sdnotify.watchdog(env=env)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert sdnotify.status("two\nlines", env=env)
    assert sock.recv(4096) == b"STATUS=two lines"  # a newline would start a new assignment
    assert sdnotify.stopping(env=env)
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket():
    name = f"rustymt-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_every_call_is_a_no_op():
    assert sdnotify.ready(env={}) is False
    assert sdnotify.watchdog(env={"NOTIFY_SOCKET": ""}) is False
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": "vsock:2:1"}) is False


def test_gone_socket_reports_false_instead_of_raising(tmp_path):
    assert sdnotify.ready(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process():
    pid = str(os.getpid())
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # another process
    assert sdnotify.watchdog_interval({}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_a_receiver_that_does_not_read_never_stalls_the_caller(notify_socket):
    # Unix datagram queues are short (net.unix.max_dgram_qlen, 10 by default) and a
    # full one blocks a sender; the daemon pings from its event loop.
    sock, env = notify_socket
    sent = [sdnotify.watchdog(env=env) for _ in range(200)]
    assert sent[0] is True
    assert sent[-1] is False  # dropped, not blocked
    assert sock.recv(4096) == b"WATCHDOG=1"
