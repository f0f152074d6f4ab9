"""CPU isolation between two tenants of the shared instance, seen end to end
over the wire: a CPU-heavy psql loop in one tenant, point-select pgbench in
the other, both through their own ports; figures from GET /api/v1/isolation/cpu
and from pgbench's per-transaction log (-l).

What is claimed, and why the test has two phases
------------------------------------------------
The engine's weighted-fair scheduler (native/wfq.c) hands out CPU slots (one
per usable core) to statements; `used_cpu_ns` is the CPU a tenant's
statements used while holding one. The scheduler is work-conserving: a tenant
that asks for less than its share gets all it asks for, and the rest goes to
whoever wants it. So "used_cpu_ns in proportion to the shares" is a property
of tenants that BOTH want more than their share; a point-select client asks
for only microseconds of statement CPU per transaction, and with a large share
it would simply get all of that while the hog takes everything else (the
ratio would then measure demand, not shares). Conversely a closed-loop client
that is held to its share has, by construction, a latency set by that share,
which cannot stay near its solo latency. The two halves of the issue's claim
are therefore shown in the two regimes the scheduler promises them for:

1. latency: the pgbench tenant asks for less than its share (rate-limited
   pgbench, -R) while the hog runs one psql loop per CPU slot, so every slot
   is busy with the hog. A point select must not wait for the end of a hog's
   quantum (10 ms): the scheduler's wakeup preemption hands it a slot within
   one progress-handler interval. Its protocol work and pgbench itself are
   plain threads next to the hog's in the kernel: the hog's statement threads
   sched_yield at every progress check while a tenant behind them was active
   within a quantum (kernel courtesy, native/wfq.c), so those threads do not
   wait for the kernel's slice to end. Rounds alternate solo / with the hog (the
   hog's psql processes are stopped and continued) so that other load on the
   machine falls on both sides alike; the pooled p99s must be within 1.5x.
   Here the pgbench tenant even has HALF the hog's shares: asking for less
   than its share is what protects it, not out-weighing the hog.
2. proportion: the operator lowers the pgbench tenant to priority best_effort
   (silver critical 2048 : bronze best_effort 64, tier x priority,
   rustymt.model.tiers) and pgbench runs
   closed-loop with 8 clients, so it wants more statement CPU than 1/33 of
   what the hog gets and both tenants are backlogged. Over a window of 8 s
   of the hog's CPU the used_cpu_ns deltas must be in the shares' ratio
   within +-5%. (Neither tenant's guaranteed minimum binds at these shares:
   bronze's 2% of a core is below 1/33 of the slots, silver's 5% below 32/33.)
"""
from __future__ import annotations

import os
import signal
import subprocess

from tests.conftest import wait_for
from tests.daemon_engine.conftest import get_json, new_tenant

HOG_STATEMENT = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows}) SELECT count(*) FROM c;\n"
SHORT_HOG_ROWS = 1_000_000     # latency phase: the hog is paused between rounds, statements in flight finish soon
LONG_HOG_ROWS = 2_000_000    # proportion phase: the gaps between the loop's statements are negligible
ACCOUNTS = 10_000
SETUP = f"""CREATE TABLE pgbench_accounts (aid integer PRIMARY KEY, bid integer, abalance integer, filler char(84));
INSERT INTO pgbench_accounts WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {ACCOUNTS})
  SELECT i, 1, 0, '' FROM s;
"""
POINT_SELECT = f"\\set aid random(1, {ACCOUNTS})\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
ROUNDS = 5                 # solo / loaded pairs in the latency phase: a host stall of tens of ms
                           # in one round must not be the pooled p99 on its own (~3% of a side)
ROUND_SECONDS = 3
RATE_TPS = 400             # latency phase: far below the tenant's share
WINDOW_HOG_CPU_NS = 8_000_000_000  # proportion phase: measure until the hog used this much CPU; the
# pgbench tenant's part (~250 ms) must dwarf one quantum (10 ms) of its own CPU, the scheduler's granularity
# A tenant that comes back from idle may be up to one quantum of its own CPU
# behind (the scheduler's "keeps its place" lag, native/wfq.c step 1): at 64
# shares that credit is worth 320 ms of the hog's CPU. The window starts once
# the pgbench tenant has spent more than that.
WARMUP_CPU_NS = 20_000_000
P99_LIMIT = 1.5
RATIO_TOLERANCE = 0.05


def pg_env(tenant: dict) -> dict:
    return {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(tenant["port"]), "PGUSER": tenant["user"],
            "PGPASSWORD": tenant["password"], "PGDATABASE": tenant["pdb_name"], "PGCONNECT_TIMEOUT": "5"}


def used_cpu_ns(daemon, tenant: dict) -> int:
    return get_json(daemon, f"/api/v1/isolation/cpu?tenant={tenant['tenant_id']}")["used_cpu_ns"]


def set_priority(daemon, tenant: dict, priority: str) -> int:
    response = daemon.request("PUT", f"/api/v1/tenants/{tenant['tenant_id']}/priority", json={"priority": priority})
    assert response.status == 200, response.text
    return response.json["cpu_shares"]


class HogLoops:
    """One psql process per CPU slot, each running HOG_STATEMENT over and over."""

    def __init__(self, daemon, tenant: dict, script: str, count: int):
        self.daemon, self.tenant = daemon, tenant
        self.processes = [subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", script],
                                           env=pg_env(tenant), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                          for _ in range(count)]
        self._seen = None

    def used(self) -> int:
        return used_cpu_ns(self.daemon, self.tenant)

    def running(self) -> None:
        """Continue the loops and wait until the engine charges the hog CPU again."""
        for process in self.processes:
            process.send_signal(signal.SIGCONT)
        start = self.used()
        wait_for(lambda: self.used() > start + 20_000_000, 30, interval=0.05, what="the hog to run")

    def paused(self) -> None:
        """Stop the psql processes; wait until the statements they had sent are done
        (the hog's CPU stays the same over a poll interval)."""
        for process in self.processes:
            process.send_signal(signal.SIGSTOP)
        self._seen = None

        def settled():
            now = self.used()
            previous, self._seen = self._seen, now
            return previous is not None and now == previous

        wait_for(settled, 30, interval=0.25, what="the hog's statements in flight to finish")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait(10)
        for process in self.processes:
            assert process.returncode in (-signal.SIGKILL, 0), process.stderr.read().decode()


def pgbench_latencies(tenant: dict, script: str, workdir: str, tag: str) -> list[int]:
    """One rate-limited pgbench round; the per-transaction latencies (us) from its -l log."""
    os.makedirs(workdir, exist_ok=True)
    result = subprocess.run(["pgbench", "-n", "-f", script, "-M", "prepared", "-c", "4", "-j", "2",
                             "-R", str(RATE_TPS), "-T", str(ROUND_SECONDS), "-l", "--log-prefix", tag],
                            env=pg_env(tenant), cwd=workdir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    latencies = []
    for name in os.listdir(workdir):
        if name.startswith(tag + "."):
            with open(os.path.join(workdir, name)) as log:
                latencies += [int(line.split()[2]) for line in log]  # client_id tx_no time_us script_no ...
    assert len(latencies) > RATE_TPS * ROUND_SECONDS // 2, f"{tag}: only {len(latencies)} transactions"
    return latencies


def p99(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_cpu_isolation_over_the_wire(engine_daemon, tmp_path):
    # silver and bronze: both in the shared instance (gold and platinum get instances of their own)
    hog = new_tenant(engine_daemon, "hog", tier="silver")
    bench = new_tenant(engine_daemon, "bench", tier="bronze")
    instances = get_json(engine_daemon, "/api/v1/cdb/status")["instances"]
    assert [i["name"] for i in instances if {hog["tenant_id"], bench["tenant_id"]} <= set(i["tenants"])] == ["shared"]
    hog_shares = set_priority(engine_daemon, hog, "critical")     # 512 x 4
    assert set_priority(engine_daemon, bench, "critical") * 2 == hog_shares  # 256 x 4: half the hog's shares

    setup = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", SETUP], env=pg_env(bench),
                           capture_output=True, text=True, timeout=60)
    assert setup.returncode == 0, setup.stderr
    point_select = tmp_path / "point_select.sql"
    point_select.write_text(POINT_SELECT)
    short_hog, long_hog = tmp_path / "short_hog.sql", tmp_path / "long_hog.sql"
    short_hog.write_text(HOG_STATEMENT.format(rows=SHORT_HOG_ROWS) * 100_000)
    long_hog.write_text(HOG_STATEMENT.format(rows=LONG_HOG_ROWS) * 1000)
    slots = len(os.sched_getaffinity(0))  # the instance's scheduler has one slot per usable core

    loops = HogLoops(engine_daemon, hog, str(short_hog), slots)
    try:
        # ---- 1. latency: pgbench asks for less than its share; the hog fills every slot
        solo, loaded = [], []
        for round_no in range(ROUNDS):
            loops.paused()
            solo += pgbench_latencies(bench, str(point_select), str(tmp_path / "solo"), f"solo{round_no}")
            loops.running()
            loaded += pgbench_latencies(bench, str(point_select), str(tmp_path / "loaded"), f"loaded{round_no}")
        p99_solo, p99_loaded = p99(solo), p99(loaded)
        print(f"\npoint-select p99 solo {p99_solo} us, with the hog on {slots} slots {p99_loaded} us, "
              f"ratio {p99_loaded / p99_solo:.2f} ({len(solo)} / {len(loaded)} transactions)")

        # ---- 2. proportion: both tenants want more than their share
        loops.stop()
        loops = HogLoops(engine_daemon, hog, str(long_hog), slots)
        bench_shares = set_priority(engine_daemon, bench, "best_effort")
        saturating = subprocess.Popen(["pgbench", "-n", "-f", str(point_select), "-M", "prepared", "-c", "8", "-j", "2",
                                       "-T", "120"], env=pg_env(bench), cwd=str(tmp_path),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            start = used_cpu_ns(engine_daemon, bench)
            wait_for(lambda: used_cpu_ns(engine_daemon, bench) > start + WARMUP_CPU_NS, 60, interval=0.05,
                     what="pgbench to be running past its credit")
            before = {"hog": loops.used(), "bench": used_cpu_ns(engine_daemon, bench)}
            wait_for(lambda: loops.used() - before["hog"] >= WINDOW_HOG_CPU_NS, 60, interval=0.1,
                     what="the measuring window (hog CPU)")
            after = {"hog": loops.used(), "bench": used_cpu_ns(engine_daemon, bench)}
            assert saturating.poll() is None, saturating.stderr.read().decode()
        finally:
            saturating.kill()
            saturating.wait(10)
    finally:
        loops.stop()

    used_hog, used_bench = after["hog"] - before["hog"], after["bench"] - before["bench"]
    ratio, expected = used_bench / used_hog, bench_shares / hog_shares
    print(f"used_cpu_ns over the window: hog {used_hog / 1e9:.3f} s, pgbench tenant {used_bench / 1e9:.4f} s, "
          f"ratio {ratio:.4f}; shares {bench_shares}:{hog_shares} = {expected:.4f} ({ratio / expected - 1:+.1%})")
    assert abs(ratio / expected - 1) <= RATIO_TOLERANCE, (ratio, expected)
    assert p99_loaded <= P99_LIMIT * p99_solo, (p99_solo, p99_loaded)
