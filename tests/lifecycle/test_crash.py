"""SIGKILL at random points of create / clone (hot, snapshot, metadata) /
unplug / plug (copy and in place) / drop, then startup recovery, then: catalog
and disk agree, nothing left in staging/, no half PDB, the source's files
byte-for-byte unchanged.

The operation runs in a child process executing the production sequence
(rustymt.engine.pdbops with the real catalog); the kill point is drawn
uniformly over 1.2x the operation's measured duration, so early, middle and
late points (and a few after the end) are all hit.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from rustymt._native import _core
from rustymt import config
from rustymt.catalog.db import Catalog, catalog_path
from rustymt.engine import manifest, pdbops, recovery, scram, storage
from rustymt.events.bus import EventBus
from rustymt.service.lifecycle import LifecycleService
from rustymt.service.pdbs import PdbService

POINTS = int(os.environ.get("RUSTYMT_CRASH_POINTS", "10"))  # 20 per op: ~2.5 min alone; set the env for the full run
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def checksums(folder: str) -> dict[str, str]:
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder)) if name.endswith(".db")}


def states(catalog) -> dict[str, str]:
    with catalog.read() as conn:
        return {row["pdb_id"]: row["state"] for row in conn.execute("SELECT pdb_id, state FROM pdbs")}


class Scenario:
    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        os.makedirs(data_dir)
        self.catalog = Catalog.open(catalog_path(data_dir))
        storage.ensure_seed(data_dir)
        self.counter = 0
        self.protected: dict[str, dict[str, str]] = {}  # pdb_id -> checksums that must never change
        self.manifests: dict[str, str] = {}              # unplugged pdb_id -> xml path

    def next_id(self, what: str) -> str:
        self.counter += 1
        return f"p_{what}_{self.counter}"

    def make_pdb(self, rows: int = 1500) -> str:
        pdb_id = self.next_id("src")
        name = pdb_id.upper()
        now = storage.now_iso()

        def commit():
            with self.catalog.write() as conn:
                conn.execute("INSERT INTO pdbs(pdb_id, pdb_name, state, created_at, updated_at) VALUES (?, ?, 'closed', ?, ?)",
                             (pdb_id, name, now, now))

        folder = pdbops.create_from_seed(self.data_dir, pdb_id, name, "admin", scram.make_verifier("pw-1"), commit)
        conn = _core.Connection(os.path.join(folder, "users.db"))
        try:
            storage.execute(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB)")
            storage.execute(conn, f"INSERT INTO t(payload) SELECT randomblob(3000) FROM (WITH RECURSIVE s(v) AS "
                                  f"(SELECT 1 UNION ALL SELECT v+1 FROM s WHERE v < {rows}) SELECT v FROM s)")
            storage.execute(conn, "CREATE INDEX t_len ON t(length(payload))")
        finally:
            conn.close()
        manifest.checkpoint_datafiles(folder)
        return pdb_id

    def run(self, op: str, args: dict, kill_after: float | None) -> tuple[bool, float]:
        """Run the op in a child; SIGKILL it kill_after seconds after it starts.
        (finished, seconds from the op's start to the child's exit)."""
        child = subprocess.Popen([sys.executable, "-m", "tests.lifecycle.crash_driver", self.data_dir, op, json.dumps(args)],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "go", child.stderr.read()
            started = time.monotonic()
            timer = None
            if kill_after is not None:
                timer = threading.Timer(kill_after, lambda: child.poll() is None and os.kill(child.pid, signal.SIGKILL))
                timer.start()
            # Not communicate(): it reads the raw pipe and would miss a "done" that
            # readline() already pulled into the text buffer together with "go".
            child.wait(timeout=120)
            out, err = child.stdout.read(), child.stderr.read()
            seconds = time.monotonic() - started
            if timer is not None:
                timer.cancel()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if child.returncode == -signal.SIGKILL:
            return False, seconds
        assert child.returncode == 0 and "done" in out, err
        return True, seconds

    def recover_and_check(self) -> None:
        # The daemon's startup order: lifecycle recovery, then the PDB service's reconcile.
        settings = config.load(None, env={}, overrides={"server.data_dir": self.data_dir})
        pdbs = PdbService(self.catalog, settings, EventBus())
        LifecycleService(self.catalog, settings, EventBus(), pdbs).recover()
        pdbs.reconcile_storage()
        catalog_states = states(self.catalog)
        assert os.listdir(storage.staging_dir(self.data_dir)) == [], "staging leftovers"
        folders = {n for n in os.listdir(storage.pdbs_dir(self.data_dir)) if n != storage.SEED_ID}
        live = {pdb_id for pdb_id, state in catalog_states.items() if state != "dropped"}
        assert folders == live, f"disk {sorted(folders ^ live)} disagrees with the catalog"
        for pdb_id in live:
            folder = storage.pdb_dir(self.data_dir, pdb_id)
            assert storage.read_dictionary(folder)["info"]["pdb_id"] == pdb_id, "half-made PDB identity"
            assert not os.path.exists(os.path.join(folder, recovery.RELEASE_FILE))
            for name in checksums(folder):
                conn = _core.Connection(os.path.join(folder, name), readonly=True)
                try:
                    assert storage.execute(conn, "PRAGMA integrity_check") == [("ok",)], (pdb_id, name)
                finally:
                    conn.close()
            if catalog_states[pdb_id] == "unplugged":
                parsed = manifest.read(self.manifests[pdb_id])
                assert manifest.check_plug_compatibility(parsed, folder, set(), set(), "ANY") == []
        for pdb_id, sums in self.protected.items():
            assert checksums(storage.pdb_dir(self.data_dir, pdb_id)) == sums, f"source {pdb_id} changed"


def _points(scenario: Scenario, prepare, op: str):
    """A measured unkilled run, then POINTS killed runs, recovery and checks after each."""
    finished, duration = scenario.run(op, prepare(), None)
    assert finished
    scenario.recover_and_check()
    rng = random.Random(f"{op}-{POINTS}")
    killed = 0
    for _ in range(POINTS):
        args = prepare()
        if not scenario.run(op, args, rng.uniform(0, duration * 1.2))[0]:
            killed += 1
        scenario.recover_and_check()
    return killed


@pytest.mark.parametrize("op", ["create", "clone_hot", "clone_snapshot", "clone_metadata_only"])
def test_kill_during_build(tmp_path, op):
    scenario = Scenario(str(tmp_path / "data"))
    source = scenario.make_pdb()
    scenario.protected[source] = checksums(storage.pdb_dir(scenario.data_dir, source))

    def prepare():
        target = scenario.next_id("new")
        return {"source": source, "target": target, "name": target.upper()}

    killed = _points(scenario, prepare, op)
    assert killed >= POINTS // 4, f"only {killed} of {POINTS} runs were killed before the end"


def test_kill_during_unplug(tmp_path):
    scenario = Scenario(str(tmp_path / "data"))

    def prepare():
        source = scenario.make_pdb(300)
        xml = os.path.join(scenario.data_dir, f"{source}.xml")
        scenario.manifests[source] = xml
        return {"source": source, "xml": xml}

    _points(scenario, prepare, "unplug")


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "in_place"])
def test_kill_during_plug(tmp_path, copy):
    scenario = Scenario(str(tmp_path / "data"))
    source = scenario.make_pdb()
    folder = storage.pdb_dir(scenario.data_dir, source)
    export = str(tmp_path / "export")
    xml = str(tmp_path / "unplugged.xml")
    manifest.unplug(folder, xml, None)
    with scenario.catalog.write() as conn:
        conn.execute("UPDATE pdbs SET state = 'unplugged' WHERE pdb_id = ?", (source,))
    scenario.manifests[source] = xml
    scenario.protected[source] = checksums(folder)

    def prepare():
        target = scenario.next_id("plugged")
        data = open(xml, "rb").read()
        if copy:
            path = xml
        else:  # in place consumes the unplugged set: a fresh one in the export dir each time
            shutil.rmtree(export, ignore_errors=True)
            shutil.copytree(folder, export)
            path = str(tmp_path / "export.xml")
            parsed_dir = manifest.parse(data)["datafiles_dir"]
            open(path, "wb").write(data.replace(parsed_dir.encode(), export.encode()))
        return {"xml": path, "target": target, "name": target.upper(), "copy": copy}

    _points(scenario, prepare, "plug")


def test_kill_during_drop(tmp_path):
    scenario = Scenario(str(tmp_path / "data"))
    keeper = scenario.make_pdb(200)
    scenario.protected[keeper] = checksums(storage.pdb_dir(scenario.data_dir, keeper))
    _points(scenario, lambda: {"source": scenario.make_pdb(1000)}, "drop")
