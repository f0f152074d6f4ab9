"""pgbench against rustymt's wire server and against a real PostgreSQL 15, in
the same run on the same machine: select-only (-M simple, extended and
prepared) and TPC-B-like (simple, prepared) scripts, 8 clients, 100k accounts. Reports the TPS ratio (rustymt / PostgreSQL) and p99
latencies. Run:

    .venv/bin/python -m pytest bench/test_pgwire_bench.py -s
    RUSTYMT_PGBENCH_SECONDS=30 RUSTYMT_PGBENCH_ROUNDS=5 ...
      (default: 10 s per side and script/mode, in 3 alternating slices)
    RUSTYMT_PGBENCH_NATIVE_LOOP=0 ...   rustymt without its native round-trip loop

rustymt's server CPU per transaction (utime+stime of its process / pgbench
transactions) is printed too: load moves it less than TPS.

PostgreSQL comes from Debian's postgresql-15 package (scripts/apt-packages.txt):
the bench runs initdb into a throwaway directory as the `postgres` user (the
server refuses root), listens on a random loopback port, and removes it after.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pytest

PG_BIN = "/usr/lib/postgresql/15/bin"
SECONDS = int(os.environ.get("RUSTYMT_PGBENCH_SECONDS", "10"))
# The machine is shared: load shifts within seconds. Each side runs SECONDS in
# ROUNDS alternating slices (PostgreSQL, rustymt, PostgreSQL, ...) and the
# reported ratio is the median of the per-round ratios.
ROUNDS = int(os.environ.get("RUSTYMT_PGBENCH_ROUNDS", "3"))
NATIVE_LOOP = os.environ.get("RUSTYMT_PGBENCH_NATIVE_LOOP", "1") != "0"
CLIENTS = 8
ACCOUNTS = 100_000
PASSWORD = "bench-pw"

SCHEMA = f"""
CREATE TABLE pgbench_branches (bid integer PRIMARY KEY, bbalance integer, filler char(88));
CREATE TABLE pgbench_tellers (tid integer PRIMARY KEY, bid integer, tbalance integer, filler char(84));
CREATE TABLE pgbench_accounts (aid integer PRIMARY KEY, bid integer, abalance integer, filler char(84));
CREATE TABLE pgbench_history (tid integer, bid integer, aid integer, delta integer, mtime timestamp, filler char(22));
INSERT INTO pgbench_branches VALUES (1, 0, '');
INSERT INTO pgbench_tellers WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10)
  SELECT i, 1, 0, '' FROM s;
INSERT INTO pgbench_accounts WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {ACCOUNTS})
  SELECT i, 1, 0, '' FROM s;
"""
SELECT_ONLY = f"""\\set aid random(1, {ACCOUNTS})
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
"""
TPCB_LIKE = f"""\\set aid random(1, {ACCOUNTS})
\\set tid random(1, 10)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = 1;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, 1, :aid, :delta, CURRENT_TIMESTAMP);
END;
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port, env, deadline=60.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        probe = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-d", "bench", "-c", "SELECT 1"],
                               env=env, capture_output=True)
        if probe.returncode == 0:
            return
        time.sleep(0.2)  # polling a server's start-up with a deadline
    raise RuntimeError(f"server on port {port} did not start")


class Target:
    def __init__(self, name, port, env, proc):
        self.name, self.port, self.env, self.proc = name, port, env, proc

    def psql(self, sql):
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                        "-d", "bench", "-c", sql], env=self.env, check=True, capture_output=True, timeout=600)

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (rustymt: one process)."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def pgbench(self, script_path, mode, workdir, seconds=SECONDS):
        prefix = os.path.join(workdir, f"{self.name}-{mode}-{os.path.basename(script_path)}")
        cpu_before = self.cpu_seconds()
        result = subprocess.run(["pgbench", "-n", "-h", "127.0.0.1", "-p", str(self.port), "-f", script_path,
                                 "-M", mode, "-c", str(CLIENTS), "-j", "2", "-T", str(seconds), "-l",
                                 "--log-prefix", prefix, "bench"],
                                env=self.env, capture_output=True, text=True, timeout=seconds * 4 + 60, cwd=workdir)
        assert result.returncode == 0, result.stderr
        cpu = self.cpu_seconds() - cpu_before
        tps = float(re.search(r"tps = ([\d.]+)", result.stdout).group(1))
        transactions = int(re.search(r"actually processed: (\d+)", result.stdout).group(1))
        failed = int(re.search(r"number of failed transactions: (\d+)", result.stdout).group(1))
        latencies = []
        for name in os.listdir(workdir):
            if name.startswith(os.path.basename(prefix)):
                with open(os.path.join(workdir, name)) as log:
                    latencies += [int(line.split()[2]) for line in log if line.strip()]
                os.unlink(os.path.join(workdir, name))
        return {"tps": tps, "failed": failed, "latencies_us": latencies, "cpu_s": cpu, "transactions": transactions}


def combine(runs):
    latencies = [value for run in runs for value in run["latencies_us"]]
    p99 = statistics.quantiles(latencies, n=100)[98] / 1000 if len(latencies) >= 100 else float("nan")
    transactions = sum(run["transactions"] for run in runs)
    return {"tps": statistics.fmean(run["tps"] for run in runs), "p99_ms": round(p99, 3),
            "failed": sum(run["failed"] for run in runs),
            "server_us_per_tx": round(sum(run["cpu_s"] for run in runs) * 1e6 / max(transactions, 1), 1)}


@pytest.fixture(scope="module")
def workdir():
    path = tempfile.mkdtemp(prefix="rustymt-pgbench-")
    os.chmod(path, 0o777)  # the postgres user writes its data dir below
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(workdir):
    if not os.path.exists(f"{PG_BIN}/postgres"):
        pytest.fail("PostgreSQL 15 server missing: install Debian's postgresql-15 (scripts/apt-packages.txt)")
    user = pwd.getpwnam("postgres")
    data = os.path.join(workdir, "pgdata")
    pwfile = os.path.join(workdir, "pgpw")
    with open(pwfile, "w") as handle:
        handle.write(PASSWORD)
    os.chown(pwfile, user.pw_uid, user.pw_gid)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(as_postgres + [f"{PG_BIN}/initdb", "-D", data, "-U", "bench", "--auth=scram-sha-256",
                                  f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"],
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen(as_postgres + [f"{PG_BIN}/postgres", "-D", data, "-p", str(port), "-h", "127.0.0.1",
                                           "-k", data, "-c", "max_connections=50", "-c", "shared_buffers=128MB",
                                           # rustymt commits in WAL mode with synchronous=NORMAL: durable
                                           # across a process crash, not an OS crash; the same for PostgreSQL:
                                           "-c", "synchronous_commit=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, PGUSER="bench", PGPASSWORD=PASSWORD)
    try:
        _wait_pg(port, env)
        subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-d", "postgres", "-c",
                        "CREATE DATABASE bench"], env=env, check=True, capture_output=True)
        target = Target("postgres", port, env, proc)
        target.psql(SCHEMA)
        target.psql("VACUUM ANALYZE")
        yield target
    finally:
        with open(os.path.join(data, "postmaster.pid")) as pidfile:
            os.kill(int(pidfile.readline()), signal.SIGINT)  # fast shutdown of the postmaster we started
        proc.wait(60)


def _wait_pg(port, env):
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)  # polling a server's start-up with a deadline
    raise RuntimeError("PostgreSQL did not start")


@pytest.fixture(scope="module")
def rustymt(workdir):
    directory = os.path.join(workdir, "rustymt")
    proc = subprocess.Popen([sys.executable, "-m", "rustymt.engine.pgwire", "--dir", directory, "--user",
                             f"bench:{PASSWORD}", "--create", "bench"] + ([] if NATIVE_LOOP else ["--no-native-loop"]),
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = int(line.split()[1])
        env = dict(os.environ, PGUSER="bench", PGPASSWORD=PASSWORD)
        wait_ready(port, env)
        target = Target("rustymt", port, env, proc)
        target.psql(SCHEMA)
        yield target
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("script_name, script, mode", [
    ("select-only", SELECT_ONLY, "simple"),
    ("select-only", SELECT_ONLY, "extended"),
    ("select-only", SELECT_ONLY, "prepared"),
    ("tpcb-like", TPCB_LIKE, "simple"),
    ("tpcb-like", TPCB_LIKE, "prepared"),
], ids=["select-only-simple", "select-only-extended", "select-only-prepared", "tpcb-like-simple",
        "tpcb-like-prepared"])
def test_pgbench_rustymt_vs_postgresql(benchmark, workdir, postgres, rustymt, script_name, script, mode):
    script_path = os.path.join(workdir, f"{script_name}.sql")
    with open(script_path, "w") as handle:
        handle.write(script)
    os.chmod(script_path, 0o644)
    slice_seconds = max(1, SECONDS // ROUNDS)
    theirs_runs, ours_runs = [], []

    def alternate():
        for _ in range(ROUNDS):
            theirs_runs.append(postgres.pgbench(script_path, mode, workdir, slice_seconds))
            ours_runs.append(rustymt.pgbench(script_path, mode, workdir, slice_seconds))

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    ratio = statistics.median(o["tps"] / b["tps"] for o, b in zip(ours_runs, theirs_runs))
    ours, baseline = combine(ours_runs), combine(theirs_runs)
    benchmark.extra_info.update({"rustymt": ours, "postgresql": baseline, "tps_ratio": round(ratio, 3)})
    print(f"\n[pgbench {script_name} -M {mode}, {CLIENTS} clients, {ROUNDS}x{slice_seconds}s each] "
          f"rustymt {ours['tps']:.0f} tps p99 {ours['p99_ms']:.2f} ms {ours['server_us_per_tx']} us/tx | "
          f"PostgreSQL 15 {baseline['tps']:.0f} tps p99 {baseline['p99_ms']:.2f} ms | "
          f"TPS ratio {ratio:.3f} | failed {ours['failed']}/{baseline['failed']}")
    assert ours["failed"] == 0
