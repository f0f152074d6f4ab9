"""The control-plane catalog: one SQLite file, WAL, foreign keys, migrations.

Each thread gets its own connection (sqlite3 connections must not be shared
across threads; the service layer runs writes and heavy reads in worker threads
so the event loop never waits on a lock or a disk sync). Short indexed reads
(`read_now`, the GET paths) run on the calling thread instead, on a separate
read-only connection: in WAL mode a reader takes no lock a writer holds and
never syncs, so a one-row SELECT costs tens of microseconds, less than the
hand-off to a worker thread and back (asyncio.to_thread: 70-190 us of CPU plus
two thread switches, measured under wrk load; docs/api.md "Performance").
`read_cached` goes one step further for the hottest GETs: it keeps a read's
result until SQLite's data_version says some connection (this process's
writers or any other process) committed, so a repeated GET costs one PRAGMA
(and on an event loop, under load, not even that: see `read_cached`). Connections are in autocommit mode and
every mutation is one explicit `BEGIN IMMEDIATE` transaction: the write lock is
taken up front, so two concurrent creates of one name serialize at BEGIN and
the second sees the first's row instead of failing late on a stale snapshot.
busy_timeout makes waiters queue instead of erroring. synchronous=FULL: a
commit the API acknowledged survives kill -9 and power loss.
"""
from __future__ import annotations

import contextlib
import os
from asyncio import _get_running_loop  # C: the running loop of this thread or None, ~50 ns
import sqlite3
import threading
from typing import Callable, Hashable, Iterator, TypeVar

from rustymt.catalog.migrations import migrate

BUSY_TIMEOUT_MS = 10_000
READ_CACHE_ENTRIES = 4096  # per thread; all dropped at once when full (a bound, not an LRU)

T = TypeVar("T")


class CatalogError(RuntimeError):
    """The catalog file cannot be opened or is from a newer rustymt."""


class Catalog:
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._commits = 0  # this process's commits through write(): read_cached's in-process change signal

    @classmethod
    def open(cls, path: str) -> "Catalog":
        """Open (creating when missing) and bring the schema up to date."""
        catalog = cls(path)
        try:
            # Owner-only from the first byte (password hashes live here);
            # SQLite gives the -wal and -shm files the same mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            with catalog.write() as conn:
                migrate(conn)
        except (OSError, sqlite3.Error) as exc:
            catalog.close()
            raise CatalogError(f"cannot open catalog {path}: {exc}") from exc
        return catalog

    def _connection(self, role: str = "conn") -> sqlite3.Connection:
        """This thread's connection for `role`: "conn" (read/write) or "reader" (query_only)."""
        if self._closed:
            raise CatalogError("catalog is closed")
        conn = getattr(self._local, role, None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if role == "reader":
                # Enforced by SQLite: a write through this connection fails
                # instead of taking the write lock on the event-loop thread.
                conn.execute("PRAGMA query_only = ON")
            setattr(self._local, role, conn)
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One mutation = one IMMEDIATE transaction; rolled back on any error."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        finally:
            self._commits += 1  # (a rollback too: read_cached only ever re-checks needlessly)

    def read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A consistent snapshot for several SELECTs."""
        return self._snapshot(self._connection())

    def read_now(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A consistent snapshot on this thread's read-only connection, for a
        few short indexed SELECTs run right here (the event-loop thread's GET
        paths): WAL readers wait on no writer and never sync. Scans, writes and
        anything touching files belong in a worker thread with read()/write()."""
        return self._snapshot(self._connection("reader"))

    def read_cached(self, key: Hashable, query: Callable[[sqlite3.Connection], T]) -> T:
        """query(conn) in a read_now() snapshot, or the result it gave for `key`
        when nothing was committed to the catalog since.

        `PRAGMA data_version` changes when any other connection, in this
        process or another, commits; this thread's reader never writes, so an
        unchanged value means every earlier result is still the catalog's
        truth. The version is read before the snapshot: a commit in between
        makes the stored result newer than its version, never staler. Results
        are shared between callers and must not be mutated; a query that
        raises stores nothing.

        On an event loop thread the PRAGMA is read once per loop iteration
        (`_data_version`): it takes and drops SQLite's shared lock, two fcntl
        calls, ~5 us, and under load one iteration answers many requests.
        """
        conn = self._connection("reader")
        version = self._data_version(conn)
        cache = getattr(self._local, "read_cache", None)
        if cache is None or cache[0] != version:
            cache = self._local.read_cache = (version, {})
        results = cache[1]
        if key in results:
            return results[key]
        with self._snapshot(conn):
            result = query(conn)
        if len(results) >= READ_CACHE_ENTRIES:
            results.clear()
        results[key] = result
        return result

    def _data_version(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """(this process's commits, this thread's reader's PRAGMA data_version): changes when any
        connection commits. On an event loop thread the PRAGMA's answer is kept until the loop's
        next iteration (a call_soon callback forgets it) or this process's next commit, whichever
        comes first. That sees every commit a request can know of: another process's commit that
        a client saw before sending its request happened before the select() that delivered the
        request, and the iteration's first read came after that select(); this process's own
        commits (any thread) count at once. Off a loop (worker threads) it is read every time."""
        commits = self._commits
        loop = _get_running_loop()
        if loop is None:
            return commits, conn.execute("PRAGMA data_version").fetchone()[0]
        kept = getattr(self._local, "loop_version", None)
        if kept is not None and kept[0] == commits:
            return kept
        kept = self._local.loop_version = (commits, conn.execute("PRAGMA data_version").fetchone()[0])
        loop.call_soon(self._forget_loop_version, kept)
        return kept

    def _forget_loop_version(self, kept: tuple[int, int]) -> None:
        if getattr(self._local, "loop_version", None) is kept:
            self._local.loop_version = None

    @classmethod
    @contextlib.contextmanager
    def _snapshot(cls, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            cls._rollback(conn)
            raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite may already have rolled back (disk full, I/O error); a second
        # ROLLBACK would fail and hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()


def catalog_path(data_dir: str) -> str:
    return os.path.join(data_dir, "catalog.db")
