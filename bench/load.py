"""The load generator for the API bench: wrk at 64 connections, plus server CPU per request.

wrk (C, epoll) rather than a Python client, so the client is not the
bottleneck that flattens the difference between the servers. Besides wrk's
throughput and latency percentiles, the server process's own CPU time per
request is read from /proc (psutil): other load on the host changes wall
clock figures a lot, CPU per request much less.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

import psutil
import pytest

CONCURRENCY = 64
DURATION_SECONDS = 5
WRK_THREADS = 2


@dataclasses.dataclass
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers and socket errors
    server_cpu_us: float  # server process CPU time (user + system) per request: immune to other load on the host


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNIT_MS[unit]


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def run_wrk(url: str, token: str, pid: int, connections: int = CONCURRENCY, seconds: int = DURATION_SECONDS) -> LoadResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk not installed (scripts/apt-packages.txt lists it; run scripts/bootstrap as root)")
    server = psutil.Process(pid)
    cpu_before = _cpu_seconds(server)
    result = subprocess.run(
        [wrk, "-t", str(min(WRK_THREADS, connections)), "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "-H", f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    cpu_used = _cpu_seconds(server) - cpu_before
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    assert {"50", "99"} <= set(percentiles), out
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return LoadResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=_milliseconds(percentiles["50"]),
        p99_ms=_milliseconds(percentiles["99"]),
        requests=total,
        errors=errors,
        server_cpu_us=cpu_used / max(total, 1) * 1e6,
    )
