"""SIGKILL the real daemon (`rustymt serve`) and its engine instance in the
middle of create, clone (hot, snapshot, metadata-only), unplug (keep and
move), plug (copy and in place) and drop; restart; check through the REST
API, the filesystem and a PostgreSQL client that recovery finished or rolled
back each of them: catalog and disk agree, nothing left in staging/, no half
PDB, no job left in_progress, the sources' rows and checksums unchanged.

Every point is a real SIGKILL of the daemon's whole process tree and a real
restart (startup recovery). Kinds of daemon life:

* census: each op runs alone to its end, traced (its step boundaries); then
  one run of every op at once (how long such a batch takes).
* deterministic: the daemon starts with RUSTYMT_CRASHPOINT=op:n,... (see
  rustymt.engine.crashpoint); the test starts the operations one by one, each
  parks at its n-th step boundary, and when the last one parks the daemon
  SIGKILLs its instance and itself. n runs over 1..N for every operation,
  so every step boundary of every operation is a crash point.
* time-random: up to RUNS_PER_OP concurrent runs of each op still short of
  MIN_POINTS are sent at once, and the test SIGKILLs the daemon's process
  group and every process below it at a random instant within the batch's
  expected span; the crash-point trace (each run is its subject) says how
  far each run got. A run killed before its last boundary is a point.

Random lives continue until every operation has MIN_POINTS points. The
figures are printed (run with -s to see them).
"""
from __future__ import annotations

import collections
import hashlib
import http.client
import os
import random
import signal
import subprocess
import sys
import threading
import time

import psycopg

from rustymt._native import _core
from rustymt.engine import manifest, storage
from rustymt.engine.crashpoint import descendants
from tests.conftest import wait_for
from tests.daemon import REPO_ROOT, STARTED, Daemon, clean_env, private_tenant_ports

MIN_POINTS = 20
MAX_RANDOM_LIVES = 40
RUNS_PER_OP = 3  # concurrent runs of one op in a random life (the trace tells them apart)
CLONES = ("clone_hot", "clone_snapshot", "clone_metadata_only")
# Launch order of a deterministic life: job threads first, then the REST handlers that park
# on the daemon's default thread pool (6 threads on 2 cores; never more than 6 of these).
OPS = (*CLONES, "unplug_keep", "unplug_move", "plug_copy", "plug_in_place", "create", "drop")
PASSWORD = "crash-password-1"
ROWS = 2000


def sha256(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def checksums(folder: str) -> dict[str, str]:
    return {name: sha256(os.path.join(folder, name)) for name in sorted(os.listdir(folder)) if name.endswith(".db")}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Rig:
    """One data dir, the daemon lives on it, and what the test made there."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.env = {**private_tenant_ports(), "RUSTYMT_CDB_MAX_PDBS": "2000"}
        self.daemon: Daemon | None = None
        self.token: str | None = None
        self.lives = 0
        self.fodder_made = 0
        self.start_seconds: list[float] = []
        self.trace = ""
        self.pids: set[int] = set()
        self.moved: set[str] = set()       # PDBs unplugged with their datafiles moved out (when unplugged)
        self.sums: dict[str, dict] = {}    # fodder PDB id -> checksums that must hold while it is in place
        self.points: dict[str, list[str]] = collections.defaultdict(list)  # op -> where each kill found it

    # ---- daemon lives

    def start(self, crashpoint: str | None) -> None:
        self.lives += 1
        self.trace = os.path.join(os.path.dirname(self.data_dir), f"trace-{self.lives}")
        env = dict(self.env)
        if crashpoint:
            env.update(RUSTYMT_CRASHPOINT=crashpoint, RUSTYMT_CRASHPOINT_TRACE=self.trace)
        address_file = os.path.join(self.data_dir, "run", "rustymtd.addr")
        if os.path.exists(address_file):
            os.unlink(address_file)  # left by the killed predecessor
        log_path = self.data_dir + ".log"
        started = time.monotonic()
        with open(log_path, "ab") as log:
            # Its own session: the test can kill the daemon's whole process group at once.
            process = subprocess.Popen([sys.executable, "-m", "rustymt", "serve", "--data-dir", self.data_dir,
                                        "--listen", "127.0.0.1:0"], stdout=log, stderr=subprocess.STDOUT,
                                       env=clean_env(env), cwd=REPO_ROOT, start_new_session=True)
        self.daemon = Daemon(self.data_dir, process, log_path, env)
        STARTED.append(self.daemon)
        self.daemon._admin_token = self.token
        self.daemon._wait_ready(address_file)
        self.start_seconds.append(time.monotonic() - started)
        self.token = self.daemon.admin_token
        self.pids = set(descendants(process.pid))
        assert self.pids, "the daemon runs its engine instance"

    def kill(self) -> None:
        """SIGKILL the daemon's process group and every process below it (found at start), at once."""
        process = self.daemon.process
        os.killpg(process.pid, signal.SIGKILL)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait_dead()

    def wait_dead(self, timeout: float = 60) -> None:
        try:
            code = self.daemon.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            raise AssertionError(f"the daemon did not die at its crash point:\n{self.daemon.log()}") from None
        assert code == -signal.SIGKILL, f"daemon exit {code}:\n{self.daemon.log()}"
        wait_for(lambda: not any(alive(pid) for pid in self.pids), 10, what="engine instances killed")

    def call(self, method: str, path: str, json=None, timeout: float = 60):
        return self.daemon.request(method, path, json=json, timeout=timeout)

    def trace_lines(self) -> list[list[str]]:
        """This life's crash-point trace: [op, n, subject, label..., time] and [park, op, n, subject, label...]."""
        if not os.path.exists(self.trace):
            return []
        with open(self.trace) as handle:
            return [line.split() for line in handle if line.endswith("\n")]

    def parked(self, op: str) -> bool:
        return any(fields[:2] == ["park", op] for fields in self.trace_lines())

    def passed(self, subject: str) -> list[tuple[str, float]]:
        """(label, unix time) of every step boundary the run called subject passed."""
        return [(" ".join(fields[3:-1]), float(fields[-1])) for fields in self.trace_lines()
                if fields[0] != "park" and fields[2] == subject]

    # ---- what the test builds

    def pdbs(self) -> dict[str, dict]:
        found, page = {}, 1
        while True:
            body = self.call("GET", f"/api/v1/pdbs?page_size=100&page={page}").json
            found.update({p["pdb_id"]: p for p in body["pdbs"]})
            if page * 100 >= body["total"]:
                return found
            page += 1

    def wait_job(self, job_id: str) -> dict:
        def finished():
            job = self.call("GET", f"/api/v1/jobs/{job_id}").json
            return job if job["status"] in ("completed", "failed", "cancelled") else None

        return wait_for(finished, 60, interval=0.01, what=f"job {job_id}")

    def clone(self, source: str, name: str, clone_type: str) -> dict:
        answer = self.call("POST", f"/api/v1/pdbs/{source}/clone",
                           {"target_name": name, "clone_type": clone_type, "allow_full_copy": True})
        assert answer.status == 202, answer.text
        job = self.wait_job(answer.json["job_id"])
        assert job["status"] == "completed", job
        return job

    def unplug(self, pdb_id: str, xml: str, keep: bool) -> dict:
        answer = self.call("POST", f"/api/v1/pdbs/{pdb_id}/unplug", {"xml_path": xml, "keep_datafiles": keep})
        assert answer.status == 200, answer.text
        if not keep:
            self.moved.add(pdb_id)
        return answer.json


class Sources:
    """The PDBs every clone reads: their rows (through psycopg) and files must never change."""

    def __init__(self, rig: Rig):
        tenant = rig.daemon.create_tenant("crashsrc")
        self.tenant_id, self.port = tenant["tenant_id"], tenant["resources"]["network_port"]
        self.rw = tenant["pdb_id"]  # open READ_WRITE: hot clones
        wait_for(lambda: rig.call("GET", f"/api/v1/pdbs/{self.rw}").json["state"] == "open", 30, what="open")
        made = rig.call("POST", "/api/v1/pdbs", {"pdb_name": "CRASH_RO", "admin_user": "ro_admin",
                                                 "admin_password": PASSWORD, "tenant_id": self.tenant_id})
        assert made.status == 201, made.text
        self.ro = made.json["pdb_id"]  # open READ_ONLY: snapshot and metadata-only clones
        assert rig.call("POST", f"/api/v1/pdbs/{self.ro}/open", {"mode": "READ_WRITE"}).status == 200
        for pdb in (self.rw, self.ro):
            with self.connect(pdb, autocommit=True) as conn:
                conn.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, amount INTEGER, note TEXT)")
                conn.execute("CREATE INDEX ledger_amount ON ledger(amount)")
                conn.execute("INSERT INTO ledger(amount, note) SELECT value, hex(randomblob(200)) FROM "
                             f"(WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s "
                             f"WHERE value < {ROWS}) SELECT value FROM s)")
        assert rig.call("POST", f"/api/v1/pdbs/{self.ro}/close", {"mode": "IMMEDIATE"}).status == 200
        # Closed: fold its WALs into the files, so the bytes of users.db are final (a checkpoint
        # later, by whoever opens it, would rewrite them with the same rows).
        manifest.checkpoint_datafiles(storage.pdb_dir(rig.data_dir, self.ro))
        assert rig.call("POST", f"/api/v1/pdbs/{self.ro}/open", {"mode": "READ_ONLY"}).status == 200
        self.rows = {pdb: self.read(pdb) for pdb in (self.rw, self.ro)}
        self.ro_users_sum = sha256(os.path.join(storage.pdb_dir(rig.data_dir, self.ro), "users.db"))

    def connect(self, pdb_id: str, dbname: str | None = None, **kw):
        """As the source's admin; dbname: another PDB made from that source (same users)."""
        if pdb_id == self.rw:
            dbname, user, password = dbname or "PDB_CRASHSRC", "admin@crashsrc.example", "correct horse battery"
        else:
            dbname, user, password = dbname or "CRASH_RO", "ro_admin", PASSWORD
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname, user=user, password=password,
                               sslmode="disable", connect_timeout=10, **kw)

    def read(self, pdb_id: str, dbname: str | None = None) -> list:
        with self.connect(pdb_id, dbname) as conn:
            return conn.execute("SELECT id, amount, note FROM ledger ORDER BY id").fetchall()


PREFIX = {"create": "CR", "clone_hot": "CH", "clone_snapshot": "CS", "clone_metadata_only": "CM",
          "plug_copy": "PC", "plug_in_place": "PI"}


class Life:
    """The operations of one daemon life: runs (op, k) — k tells concurrent runs of
    one op apart —, their inputs (fodder) and what each request got."""

    def __init__(self, rig: Rig, sources: Sources, runs: list[tuple[str, int]], fodder: dict):
        self.rig, self.sources, self.runs, self.fodder = rig, sources, runs, fodder
        self.index = rig.lives
        self.sent: dict[tuple, float] = {}
        self.answers: dict[tuple, object] = {}

    def name(self, run: tuple[str, int]) -> str:
        return f"{PREFIX[run[0]]}_{self.index}_{run[1]}"

    def subject(self, run: tuple[str, int]) -> str:
        """What the daemon's crash-point trace calls this run."""
        return self.name(run) if run[0] in PREFIX else self.fodder[run]

    def xml(self, run: tuple[str, int]) -> str:
        return os.path.join(self.rig.data_dir, "exports", f"{run[0]}_{self.index}_{run[1]}.xml")

    def request(self, run: tuple[str, int]) -> tuple[str, str, dict | None]:
        op, f, s = run[0], self.fodder, self.sources
        if op in CLONES:
            source = s.rw if op == "clone_hot" else s.ro
            return "POST", f"/api/v1/pdbs/{source}/clone", {"target_name": self.name(run), "clone_type": op[6:],
                                                              "allow_full_copy": True}
        if op == "create":
            return "POST", "/api/v1/pdbs", {"pdb_name": self.name(run), "admin_user": "cr_admin",
                                            "admin_password": PASSWORD, "tenant_id": s.tenant_id}
        if op.startswith("unplug"):
            return "POST", f"/api/v1/pdbs/{f[run]}/unplug", {"xml_path": self.xml(run),
                                                               "keep_datafiles": op == "unplug_keep"}
        if op.startswith("plug"):
            return "POST", "/api/v1/pdbs/plug", {"xml_path": f[run]["xml"], "pdb_name": self.name(run),
                                                 "copy_datafiles": op == "plug_copy", "tenant_id": s.tenant_id}
        return "DELETE", f"/api/v1/pdbs/{f[run]}", None

    def launch(self, run: tuple[str, int], at: float | None = None) -> threading.Thread:
        """Send the run's request on a thread (at the monotonic instant `at`); the answer, or
        the error of a connection the kill cut, lands in self.answers."""
        method, path, body = self.request(run)
        if run[0] == "unplug_move":
            self.rig.moved.add(self.fodder[run])

        def send():
            if at is not None:
                delay = at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # timing a random kill point, not synchronisation
            self.sent[run] = time.monotonic()
            try:
                self.answers[run] = self.rig.call(method, path, body)
            except (OSError, http.client.HTTPException) as exc:  # the kill cut the connection
                self.answers[run] = exc

        thread = threading.Thread(target=send, name=f"crash-{run[0]}-{run[1]}", daemon=True)
        thread.start()
        return thread

    # ---- after the restart

    def check(self, pdbs: dict[str, dict]) -> None:
        """Each run finished or rolled back, and what it read from is as it was."""
        rig, data_dir = self.rig, self.rig.data_dir
        by_name = {p["pdb_name"]: p for p in pdbs.values() if p["state"] != "dropped"}
        for run in self.runs:
            op, f = run[0], self.fodder.get(run)
            answer = self.answers.get(run)
            if op in CLONES and getattr(answer, "status", None) == 202:
                job = rig.call("GET", f"/api/v1/jobs/{answer.json['job_id']}").json
                assert job["status"] in ("completed", "failed"), job  # never in_progress after a restart
                assert (job["status"] == "completed") == (self.name(run) in by_name), job
                assert job["status"] == "completed" or "restart" in job["error"], job
            if op in PREFIX and self.name(run) in by_name:  # made: whole and consistent
                made = by_name[self.name(run)]
                assert made["state"] == "mounted", made
                folder = storage.pdb_dir(data_dir, made["pdb_id"])
                for name in checksums(folder):
                    integrity(os.path.join(folder, name))
            if op == "unplug_keep":
                folder = storage.pdb_dir(data_dir, f)
                if pdbs[f]["state"] == "unplugged":
                    assert manifest.check_plug_compatibility(manifest.read(self.xml(run)), folder, set(), set(),
                                                             "ANY") == []
                else:
                    assert not os.path.exists(self.xml(run)), "a rolled back unplug left its manifest"
                    assert checksums(folder) == rig.sums[f]
            elif op == "unplug_move":
                exported = self.xml(run)[:-4] + "_datafiles"
                if pdbs[f]["state"] == "unplugged":
                    assert not os.path.exists(storage.pdb_dir(data_dir, f))
                    assert manifest.check_plug_compatibility(manifest.read(self.xml(run)), exported, set(), set(),
                                                             "ANY") == []
                else:
                    assert not os.path.exists(self.xml(run)) and not os.path.exists(exported), \
                        "a rolled back unplug left files"
                    assert checksums(storage.pdb_dir(data_dir, f)) == rig.sums[f]
            elif op == "plug_copy":  # the unplugged set it copies from is untouched either way
                assert manifest.check_plug_compatibility(manifest.read(f["xml"]), f["dir"], set(), set(), "ANY") == []
            elif op == "plug_in_place":
                if self.name(run) in by_name:  # committed: the unplugged names were released
                    assert not os.path.exists(f["dir"]) and pdbs[f["pdb_id"]]["state"] == "dropped"
                else:
                    assert pdbs[f["pdb_id"]]["state"] == "unplugged"
                    assert manifest.check_plug_compatibility(manifest.read(f["xml"]), f["dir"], set(), set(),
                                                             "ANY") == []
            elif op == "drop":
                if pdbs[f]["state"] == "dropped":
                    assert not os.path.exists(storage.pdb_dir(data_dir, f))
                else:
                    assert checksums(storage.pdb_dir(data_dir, f)) == rig.sums[f]


def integrity(path: str) -> None:
    conn = _core.Connection(path, readonly=True, create=False)
    try:
        assert storage.execute(conn, "PRAGMA integrity_check") == [("ok",)], path
    finally:
        conn.close()


def check_invariants(rig: Rig, sources: Sources, life: Life | None) -> None:
    """After a restart: catalog = disk, no staging, no half PDB, the sources unchanged."""
    data_dir = rig.data_dir
    pdbs = rig.pdbs()
    assert os.listdir(storage.staging_dir(data_dir)) == [], "staging leftovers"
    exports = os.path.join(data_dir, "exports")
    assert not [name for name in os.listdir(exports) if ".tmp-" in name], "half-written manifest left"
    folders = set(os.listdir(storage.pdbs_dir(data_dir))) - {storage.SEED_ID}
    expected = {pdb_id for pdb_id, p in pdbs.items()
                if p["state"] != "dropped" and not (p["state"] == "unplugged" and pdb_id in rig.moved)}
    assert folders == expected, f"disk and catalog disagree on {sorted(folders ^ expected)}"
    for pdb_id in folders:
        folder = storage.pdb_dir(data_dir, pdb_id)
        assert storage.read_dictionary(folder)["info"]["pdb_id"] == pdb_id, "half-made PDB identity"
        assert not os.path.exists(os.path.join(folder, ".release.json")), "unfinished release"
    if life is not None:
        life.check(pdbs)
    assert pdbs[sources.rw]["state"] == "open" and pdbs[sources.ro]["state"] == "open"
    for pdb_id in (sources.rw, sources.ro):
        assert sources.read(pdb_id) == sources.rows[pdb_id], f"source {pdb_id} rows changed"
    assert sha256(os.path.join(storage.pdb_dir(data_dir, sources.ro), "users.db")) == sources.ro_users_sum


FODDER = ("unplug_keep", "unplug_move", "drop", "plug_copy", "plug_in_place")


def make_fodder(rig: Rig, sources: Sources, runs: list[tuple[str, int]]) -> dict:
    """Inputs of the runs that need one: a PDB to unplug keeping its files, one to unplug
    moving them, one to drop (copies of the READ_ONLY source, rows included), an unplugged
    set to plug copies from, one to plug in place. {run: input}."""
    wanted = [run for run in runs if run[0] in FODDER]
    made = {}
    for start in range(0, len(wanted), 6):  # a few copy jobs at a time
        started = {}
        for run in wanted[start:start + 6]:
            rig.fodder_made += 1
            answer = rig.call("POST", f"/api/v1/pdbs/{sources.ro}/clone", {
                "target_name": f"F{rig.fodder_made}", "clone_type": "snapshot", "allow_full_copy": True})
            assert answer.status == 202, answer.text
            started[run] = answer.json
        for run, answer in started.items():
            job = rig.wait_job(answer["job_id"])
            assert job["status"] == "completed", job
            made[run] = job["target_pdb_id"]
    fodder = {}
    for run, pdb in made.items():
        if run[0].startswith("plug"):
            keep = run[0] == "plug_copy"
            xml = os.path.join(rig.data_dir, "exports", f"fodder_{pdb}.xml")
            rig.unplug(pdb, xml, keep=keep)
            fodder[run] = {"xml": xml, "pdb_id": pdb,
                           "dir": storage.pdb_dir(rig.data_dir, pdb) if keep else xml[:-4] + "_datafiles"}
        else:
            fodder[run] = pdb
            rig.sums[pdb] = checksums(storage.pdb_dir(rig.data_dir, pdb))
    return fodder


def census(rig: Rig, sources: Sources) -> dict[str, list[str]]:
    """Run each operation to its end once, alone, traced: its step boundaries."""
    runs = [(op, 0) for op in OPS]
    life = Life(rig, sources, runs, make_fodder(rig, sources, runs))
    boundaries = {}
    for run in runs:
        life.launch(run).join(60)
        answer = life.answers[run]
        assert answer.status in (200, 201, 202), answer.text
        if run[0] in CLONES:
            assert rig.wait_job(answer.json["job_id"])["status"] == "completed"
        passed = rig.passed(life.subject(run))
        boundaries[run[0]] = [label for label, _ in passed]
    return boundaries


def deterministic_life(rig: Rig, life: Life, armed: dict[str, int]) -> None:
    """One op after the other parks at its crash point; the last one's parking kills the daemon."""
    for run in life.runs:
        life.launch(run)
        if run != life.runs[-1]:
            wait_for(lambda: rig.parked(run[0]) or rig.daemon.process.poll() is not None, 60,
                     what=f"{run[0]} parked at its crash point {armed[run[0]]}")
    rig.wait_dead()
    for op, n in armed.items():
        assert rig.parked(op), f"{op} did not reach its crash point {n}:\n{rig.daemon.log()}"


def batch_span(rig: Rig, sources: Sources) -> float:
    """Seconds from sending one run of every op at once to the batch's last step boundary."""
    runs = [(op, 1) for op in OPS]
    life = Life(rig, sources, runs, make_fodder(rig, sources, runs))
    sent = time.time()
    for thread in [life.launch(run) for run in runs]:
        thread.join(60)
    for run in runs:
        assert life.answers[run].status in (200, 201, 202), life.answers[run].text
        if run[0] in CLONES:
            assert rig.wait_job(life.answers[run].json["job_id"])["status"] == "completed"
    return max(rig.passed(life.subject(run))[-1][1] for run in runs) - sent


def random_life(rig: Rig, life: Life, span: float, rng: random.Random) -> float:
    """Send every run at once, SIGKILL at a random instant while the batch is under way
    (`span`: the expected span of a batch of len(OPS) runs); returns the instant's offset."""
    start = time.monotonic() + 0.02
    threads = [life.launch(run, at=start) for run in rng.sample(life.runs, len(life.runs))]
    offset = rng.uniform(0.1, 0.9) * span * len(life.runs) / len(OPS)
    delay = start + offset - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # the random kill instant itself
    rig.kill()
    for thread in threads:
        thread.join(30)
    return offset


def test_sigkill_the_daemon_at_every_step_and_at_random(tmp_path):
    rig = Rig(str(tmp_path / "data"))
    began = time.monotonic()
    deepest = random_lives = 0
    try:
        rig.start("trace")
        sources = Sources(rig)
        boundaries = census(rig, sources)
        span = batch_span(rig, sources)
        print(f"\nbatch of one run per op: {span:.2f}s from the requests to the last step boundary")
        deepest = max(len(b) for b in boundaries.values())
        plans = [{op: n for op in OPS if len(boundaries[op]) >= n} for n in range(1, deepest + 1)]
        fodder = make_fodder(rig, sources, [(op, n) for n, plan in enumerate(plans, start=1) for op in plan])
        prepared = time.monotonic() - began
        rig.kill()

        previous = None
        for n, armed in enumerate(plans, start=1):  # every step boundary of every op
            rig.start(",".join(f"{op}:{k}" for op, k in armed.items()))
            check_invariants(rig, sources, previous)
            runs = [(op, n) for op in armed]
            life = Life(rig, sources, runs, {run: fodder[run] for run in runs if run in fodder})
            deterministic_life(rig, life, armed)
            for op in armed:
                rig.points[op].append(f"boundary {n}: after {boundaries[op][n - 1]}")
            previous = life
        rng = random.Random(20261127)
        scale = 1.0  # feedback on the batch span: kill later while most runs had not begun, earlier while most were done
        while min(len(rig.points[op]) for op in OPS) < MIN_POINTS:
            assert random_lives < MAX_RANDOM_LIVES, f"random kills left some op short of {MIN_POINTS} points: " \
                                                    f"{ {op: len(p) for op, p in rig.points.items()} }"
            rig.start("trace")
            check_invariants(rig, sources, previous)
            random_lives += 1
            runs = [(op, k) for op in OPS for k in range(min(RUNS_PER_OP, MIN_POINTS - len(rig.points[op])))]
            life = Life(rig, sources, runs, make_fodder(rig, sources, runs))
            offset = random_life(rig, life, span * scale, rng)
            fates = collections.Counter()
            for run in runs:
                answer = life.answers.get(run)
                cut = isinstance(answer, (OSError, http.client.HTTPException))
                assert cut or answer is None or answer.status in (200, 201, 202), \
                    f"{run}: {answer.status} {answer.text}"  # cut by the kill, or done — never refused
                reached = not isinstance(answer, ConnectionRefusedError)  # else sent after the kill
                passed = [label for label, _ in rig.passed(life.subject(run))]
                fates["not begun" if not passed else "done" if len(passed) == len(boundaries[run[0]]) else "midway"] += 1
                if run in life.sent and reached and len(passed) < len(boundaries[run[0]]):  # under way when killed
                    rig.points[run[0]].append(f"random: after {passed[-1]}" if passed else
                                              "random: before its first boundary")
            print(f"random life {random_lives}: {len(runs)} runs killed at {offset * 1000:.0f} ms: {dict(fates)}")
            scale *= 1.25 if fates["not begun"] > fates["done"] else 0.8
            previous = life
        rig.start(None)
        check_invariants(rig, sources, previous)
        # What survived serves its rows: a plugged PDB (from a clone of the READ_ONLY source) read back.
        plugged = [p for p in rig.pdbs().values() if p["pdb_name"].startswith("PI_") and p["state"] == "mounted"]
        assert plugged, "no in-place plug committed in any life"
        assert rig.call("POST", f"/api/v1/pdbs/{plugged[0]['pdb_id']}/open", {"mode": "READ_ONLY"}).status == 200
        assert sources.read(sources.ro, plugged[0]["pdb_name"]) == sources.rows[sources.ro]
        rig.daemon.stop()
    finally:
        if rig.daemon is not None and rig.daemon.process.poll() is None:
            rig.kill()
    total = time.monotonic() - began
    print(f"\ncrash test: {rig.lives} daemon lives ({rig.lives - 1} SIGKILLs of daemon + instance), "
          f"{deepest} deterministic + {random_lives} random; preparation {prepared:.1f}s; "
          f"daemon start {min(rig.start_seconds):.2f}-{max(rig.start_seconds):.2f}s "
          f"(mean {sum(rig.start_seconds) / len(rig.start_seconds):.2f}s); total {total:.1f}s")
    for op in OPS:
        landed = collections.Counter(point.split(": ", 1)[1] for point in rig.points[op] if point.startswith("random"))
        print(f"  {op:20s} {len(rig.points[op]):3d} points: {len(boundaries[op])} boundaries "
              f"({', '.join(boundaries[op])}); random kills found it {dict(landed)}")
    for op in OPS:
        assert len(rig.points[op]) >= MIN_POINTS, op
