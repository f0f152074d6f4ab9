"""Asynchronous jobs: run, report progress, cancel, survive restarts.

A job is a catalog row (rustymt.catalog.jobs) plus, while it runs, one worker
thread in this daemon. The worker calls work(report, cancelled):
report(progress, bytes_transferred) records progress (catalog row written at
most every PROGRESS_WRITE_S, a clone.progress event each time) and
cancelled() tells the work to stop. The work raises to fail; a cancel
surfaces as clone.CloneCancelled. Whatever ends the job, the row gets a final
status in one transaction and clone.completed is published with it.

A job's worker does not outlive the daemon. At startup recover() finds the
rows still pending/in_progress — their worker died with the old process —
removes the staging folder each was filling and marks them failed with the
reason: the state is then as if the job never ran, and the operator may
retry (with a new Idempotency-Key). No row is ever left in_progress without a
live worker.
"""
from __future__ import annotations

import datetime
import logging
import secrets
import threading
import time

from rustymt.catalog import jobs as job_rows
from rustymt.engine import storage
from rustymt.engine.clone import CloneCancelled
from rustymt.service.errors import ServiceError

log = logging.getLogger(__name__)
PROGRESS_WRITE_S = 0.25
RESTART_ERROR = "interrupted by a daemon restart before it finished; nothing was kept, retry the request"


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def public(job: dict) -> dict:
    """A job row in the REST shape of GET /api/v1/jobs/{job_id}."""
    return {"job_id": job["job_id"], "kind": job["kind"], "status": job["status"],
            "progress": round(float(job["progress"]), 4), "bytes_transferred": int(job["bytes_transferred"]),
            "estimated_completion": job["estimated_completion"], "error": job["error"],
            "source_pdb": job["request"].get("source_pdb_name"), "target_pdb": job["request"].get("target_name"),
            "source_pdb_id": job["source_pdb_id"], "target_pdb_id": job["target_pdb_id"],
            "tenant_id": job["tenant_id"], "created_at": job["created_at"], "finished_at": job["finished_at"],
            "result": job["result"]}


class _Running:
    def __init__(self, job_id: str):
        self.job_id = job_id
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.started = time.monotonic()
        self.last_write = 0.0


class JobRunner:
    def __init__(self, catalog, bus=None, data_dir: str | None = None):
        self.catalog = catalog
        self.bus = bus
        self.data_dir = data_dir
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    # ---- startup

    def recover(self) -> list[str]:
        """Fail every job whose worker died with the previous daemon; returns their ids."""
        failed = []
        with self.catalog.write() as conn:
            for job in job_rows.active(conn):
                if job["job_id"] in self._running:
                    continue
                now = storage.now_iso()
                made = job["target_pdb_id"] and conn.execute(
                    "SELECT 1 FROM pdbs WHERE pdb_id = ? AND state != 'dropped'", (job["target_pdb_id"],)).fetchone()
                if made:  # its PDB was committed before the restart: the work is done
                    job_rows.update(conn, job["job_id"], status="completed", progress=1.0, updated_at=now,
                                    finished_at=now, estimated_completion=now, stage=None)
                    continue
                if job["stage"]:
                    storage.discard(job["stage"])
                job_rows.update(conn, job["job_id"], status="failed", error=RESTART_ERROR,
                                updated_at=now, finished_at=now, stage=None)
                failed.append(job["job_id"])
        for job_id in failed:
            log.warning("job %s failed: %s", job_id, RESTART_ERROR)
        return failed

    # ---- running

    def new_job_id(self, kind: str) -> str:
        return f"{kind}_job_{secrets.token_hex(6)}"

    def start(self, job: dict, work, on_final=None) -> dict:
        """Insert the job row (in_progress) and run work in a worker thread; returns the row.

        work(report, cancelled) -> result dict. on_final(job) runs after the final
        status is committed (events, cleanup)."""
        now = storage.now_iso()
        job = {**job, "status": "in_progress", "progress": 0.0, "bytes_transferred": 0,
               "created_at": now, "updated_at": now}
        with self.catalog.write() as conn:
            job_rows.insert(conn, job)
        running = _Running(job["job_id"])
        with self._lock:
            self._running[job["job_id"]] = running
        thread = threading.Thread(target=self._run, args=(running, job, work, on_final),
                                  name=f"job-{job['job_id']}", daemon=True)
        thread.start()
        return job

    def set_stage(self, job_id: str, stage: str | None) -> None:
        with self.catalog.write() as conn:
            job_rows.update(conn, job_id, stage=stage, updated_at=storage.now_iso())

    def _report(self, running: _Running, job: dict, progress: float, nbytes: int) -> None:
        elapsed = time.monotonic() - running.started
        eta = _iso(time.time() + elapsed * (1 - progress) / progress) if progress > 0 else None
        now = time.monotonic()
        if now - running.last_write >= PROGRESS_WRITE_S or progress >= 1.0:
            running.last_write = now
            with self.catalog.write() as conn:
                job_rows.update(conn, running.job_id, progress=progress, bytes_transferred=nbytes,
                                estimated_completion=eta, updated_at=storage.now_iso())
            self._publish("clone.progress", job, {"job_id": running.job_id, "progress": round(progress, 4),
                                                  "bytes_transferred": nbytes, "estimated_completion": eta,
                                                  "status": "in_progress"})

    def _run(self, running: _Running, job: dict, work, on_final) -> None:
        status, error, result = "completed", None, None
        try:
            result = work(lambda p, b: self._report(running, job, p, b), running.cancel.is_set)
        except CloneCancelled:
            status, error = "cancelled", "cancelled by request"
        except ServiceError as exc:
            status, error = "failed", f"{exc.code}: {exc.message}"
        except Exception as exc:  # the job fails, the daemon does not
            log.exception("job %s failed", running.job_id)
            status, error = "failed", str(exc) or type(exc).__name__
        now = storage.now_iso()
        fields = {"status": status, "error": error, "result": result, "updated_at": now, "finished_at": now,
                  "stage": None}
        if status == "completed":
            fields.update(progress=1.0, estimated_completion=now)
        try:
            with self.catalog.write() as conn:
                job_rows.update(conn, running.job_id, **fields)
                final = job_rows.get(conn, running.job_id)
            self._publish("clone.completed", job, {
                "job_id": running.job_id, "progress": final["progress"], "bytes_transferred": final["bytes_transferred"],
                "estimated_completion": final["estimated_completion"], "status": status, "error": error,
                "target_pdb_id": final["target_pdb_id"]})
            if on_final is not None:
                on_final(final)
        except Exception:
            log.exception("job %s: recording the final status failed", running.job_id)
        finally:
            with self._lock:
                self._running.pop(running.job_id, None)
            running.done.set()

    def _publish(self, event_type: str, job: dict, data: dict) -> None:
        if self.bus is not None:
            self.bus.publish(event_type, job.get("tenant_id"), data)

    # ---- reading and cancelling

    def get(self, job_id: str) -> dict:
        with self.catalog.read() as conn:
            job = job_rows.get(conn, job_id)
        if job is None:
            raise ServiceError("NOT_FOUND", f"job {job_id} does not exist")
        return job

    def cancel(self, job_id: str) -> dict:
        """Ask a running job to stop; it cleans up and ends cancelled. A finished job: INVALID_STATE."""
        job = self.get(job_id)
        if job["status"] not in job_rows.ACTIVE:
            raise ServiceError("INVALID_STATE", f"job {job_id} already {job['status']}")
        with self._lock:
            running = self._running.get(job_id)
        with self.catalog.write() as conn:
            job_rows.update(conn, job_id, cancel_requested=True, updated_at=storage.now_iso())
        if running is not None:
            running.cancel.set()
        return self.get(job_id)

    def wait(self, job_id: str, timeout: float) -> dict:
        with self._lock:
            running = self._running.get(job_id)
        if running is not None and not running.done.wait(timeout):
            raise TimeoutError(f"job {job_id} still running after {timeout}s")
        return self.get(job_id)
