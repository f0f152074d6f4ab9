"""The load generator for the API bench: wrk at 64 connections, plus server CPU per request.

wrk (C, epoll) rather than a Python client, so the client is not the
bottleneck that flattens the difference between the servers. Besides wrk's
throughput and latency percentiles, the server process's own CPU time per
request is read from /proc (psutil): other load on the host changes wall
clock figures a lot, CPU per request much less.

Two shapes of load:

* saturated (closed loop): each connection sends its next request as soon
  as the answer is in; the server is always busy and the latency is mostly
  queueing (Little's law: mean = connections / throughput);
* paced (`think_ms`): each connection waits a random think time (exponential,
  mean think_ms, drawn by wrk's Lua `delay()`) before its next request, so
  64 clients offer about 64 / (think_ms + latency) requests per second.
  wrk starts a request's clock when it writes the request, after the delay
  (wrk.c socket_writeable: `c->start = time_us()` follows the `delayed`
  branch), so the latency is the server's answer time at that offered load,
  not the think time.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile

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


# Exponential think times (a Poisson-like stream per connection), in wrk's whole milliseconds;
# each wrk thread (a Lua state of its own) seeds its generator differently.
THINK_SCRIPT = """
local mean = %f
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  math.randomseed(os.time() * 100 + id)
end
function delay()
  return math.floor(-mean * math.log(1 - math.random()) + 0.5)
end
"""


def think_time_ms(connections: int, offered_per_second: float) -> float:
    """The mean think time at which `connections` clients offer about `offered_per_second`
    (ignoring the answer time itself, which the achieved rate then shows)."""
    return connections / offered_per_second * 1000.0


def run_wrk(url: str, token: str, pid: int, connections: int = CONCURRENCY, seconds: int = DURATION_SECONDS,
            think_ms: float | None = None) -> LoadResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk not installed (scripts/apt-packages.txt lists it; run scripts/bootstrap as root)")
    script = []
    if think_ms is not None:
        handle, path = tempfile.mkstemp(suffix=".lua", prefix="rustymt-think-")
        with os.fdopen(handle, "w") as out:
            out.write(THINK_SCRIPT % think_ms)
        script = ["-s", path]
    server = psutil.Process(pid)
    cpu_before = _cpu_seconds(server)
    try:
        result = subprocess.run(
            [wrk, "-t", str(min(WRK_THREADS, connections)), "-c", str(connections), "-d", f"{seconds}s", "--latency",
             *script, "-H", f"Authorization: Bearer {token}", url],
            capture_output=True, text=True, timeout=seconds + 60,
        )
    finally:
        if script:
            os.unlink(script[1])
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
