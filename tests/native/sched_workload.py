"""CPU-bound SQLite statements of several tenants through the engine binding
with the scheduler installed; run in its own process (the scheduler's hooks
are process-wide) by tests and benches:

    python -m tests.native.sched_workload '<json config>'  ->  JSON on stdout

config: tokens, period_ms, quantum_ms, progress_ops, rows (statement size),
tenants: [{slot, shares, min_percent, max_percent, threads}], warmup_cpu_s,
measure_cpu_s (scheduler CPU to accumulate across tenants while measuring),
probe (also run one unscheduled CPU-bound thread and report its CPU share).
Result: per slot the used_cpu_ns delta over the window and the end stats,
plus the window's wall time. Fairness is read from the scheduler's CPU
accounting (thread CPU time), so other load on the machine cancels out.
"""
from __future__ import annotations

import json
import sys
import threading
import time

from rustymt._native import _core

# A statement that only burns CPU in SQLite's VM: no IO, no allocation growth.
CPU_SQL = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) SELECT sum(i) FROM c"


def run_statement(conn, rows):
    stmt, _ = conn.prepare(CPU_SQL)
    stmt.bind_all([rows])
    stmt.step()
    value = stmt.row()[0]
    stmt.finalize()
    return value


def poll(condition, timeout):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("workload did not reach its CPU target")
        time.sleep(0.01)  # polling a deadline-bounded condition


def main(config):
    _core.install()
    sched = _core.WfqScheduler(config["tokens"], config.get("period_ms", 100), config.get("quantum_ms", 10))
    slots = [t["slot"] for t in config["tenants"]]
    for t in config["tenants"]:
        sched.configure(t["slot"], t.get("shares", 1024), t.get("min_percent", 0), t.get("max_percent", 0))
    sched.install(progress_ops=config.get("progress_ops", 1000))
    stop = threading.Event()
    rows = config.get("rows", 200_000)
    expected = rows * (rows + 1) // 2

    def worker(slot):
        conn = _core.Connection(":memory:", tenant=slot)
        while not stop.is_set():
            assert run_statement(conn, rows) == expected
        conn.close()

    threads = [
        threading.Thread(target=worker, args=(t["slot"],), daemon=True)
        for t in config["tenants"]
        for _ in range(t.get("threads", 2))
    ]
    probe_share = []

    def probe():
        # What one unscheduled CPU-bound thread gets from the host meanwhile
        # (a C loop with the GIL released): the host's supply per thread.
        cpu0, wall0 = time.thread_time(), time.monotonic()
        while not stop.is_set():
            _core.wfq_run_unscheduled(2_000_000)
        probe_share.append((time.thread_time() - cpu0) / (time.monotonic() - wall0))

    if config.get("probe"):
        threads.append(threading.Thread(target=probe, daemon=True))
    for th in threads:
        th.start()

    def used():
        return {s: sched.stats(s)["used_cpu_ns"] for s in slots}

    poll(lambda: all(v > 0 for v in used().values()) and sum(used().values()) > config.get("warmup_cpu_s", 0.3) * 1e9, 120)
    start, t0 = used(), time.monotonic()
    poll(lambda: sum(used().values()) - sum(start.values()) > config["measure_cpu_s"] * 1e9, 600)
    end, wall = used(), time.monotonic() - t0
    stats = {s: sched.stats(s) for s in slots}
    stop.set()
    for th in threads:
        th.join(timeout=60)
    return {"wall_s": wall, "used_ns": {str(s): end[s] - start[s] for s in slots}, "stats": {str(s): stats[s] for s in slots},
            "probe_share": probe_share[0] if probe_share else None}


def overhead(config):
    """Thread CPU of the same statements with and without the scheduler.

    One tenant, one thread. Connection `hooked` is opened with the scheduler
    installed (progress handler every progress_ops instructions, acquire and
    release around steps); `plain` after uninstalling it (neither). Rounds
    alternate between the two so machine load hits both alike.
    """
    _core.install()
    sched = _core.WfqScheduler(config.get("tokens", 1), 100, config.get("quantum_ms", 10))
    sched.configure(1, 1024)
    sched.install(progress_ops=config.get("progress_ops", 1000))
    hooked = _core.Connection(":memory:", tenant=1)
    _core.wfq_uninstall()
    plain = _core.Connection(":memory:", tenant=1)
    rows, per_round = config.get("rows", 200_000), config.get("statements", 5)
    cpu = {"hooked": [], "plain": []}
    for r in range(config.get("rounds", 10)):
        order = [("hooked", hooked), ("plain", plain)]
        for name, conn in order if r % 2 == 0 else order[::-1]:
            if name == "hooked":
                sched.install(progress_ops=config.get("progress_ops", 1000))
            else:
                _core.wfq_uninstall()
            t0 = time.thread_time()
            for _ in range(per_round):
                run_statement(conn, rows)
            cpu[name].append(time.thread_time() - t0)
    _core.wfq_uninstall()
    return {"cpu_s": cpu, "scheduled_cpu_ns": sched.stats(1)["used_cpu_ns"]}


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    print(json.dumps(overhead(config) if config.get("mode") == "overhead" else main(config)))
