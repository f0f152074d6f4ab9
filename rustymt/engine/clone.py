"""Copying a PDB: hot (online backup), snapshot (reflink) and metadata-only.

Every clone is built in a staging folder the caller made under
<data_dir>/staging/ (storage layout and crash rules: rustymt.engine.storage);
the caller commits the catalog row and then publishes the folder. The
functions here only fill the stage and give the copy its own identity.

hot        Oracle's hot clone. Each datafile is copied with SQLite's online
           backup API, `pages_per_step` pages at a time, from a connection
           that holds ONE read transaction for the whole copy. The backup
           step uses that open read transaction instead of starting one per
           step, so the copy is the file exactly as it was when the
           transaction began, however many commits land meanwhile (the files
           are in WAL mode: the source's writers never wait for us). Each
           file is consistent at its own instant; SQLite does not make
           commits atomic across WAL-mode files either, so that is all a
           multi-file reader of the source could ever see. Progress is pages
           copied over pages to copy.
snapshot   Oracle's SNAPSHOT COPY. The datafiles (and their WAL) are cloned
           with the FICLONE ioctl: copy-on-write extents, constant time
           whatever the size. The source must be closed or quiesced: while we
           clone we hold each file's write lock, so no commit can change the
           database file + WAL pair between the two ioctls (a concurrent
           checkpoint only copies WAL frames we also take). Without reflink
           support it fails naming the filesystem, unless allow_full_copy.
metadata   Oracle's NO DATA clone: every table, index, view and trigger of
           every tablespace, no rows; page size, encoding and user_version
           kept. The dictionary (users, tablespaces, lockdown) is copied.

The new PDB always gets its own pdb_id, name, GUID and creation time; it keeps
the source's users (SCRAM verifiers), tablespaces and lockdown profile.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
import uuid

from rustymt._native import _core
from rustymt.engine import crashpoint, storage
from rustymt.engine.storage import execute

FICLONE = 0x40049409          # _IOW(0x94, 9, int), linux/fs.h
DEFAULT_PAGES_PER_STEP = 1024
BUSY_MS = 5000
CLONE_TYPES = ("hot", "snapshot", "metadata_only")


class CloneError(Exception):
    """A clone that cannot be made; the message says why (shown to the operator)."""


class CloneCancelled(CloneError):
    def __init__(self):
        super().__init__("clone cancelled")


class Progress:
    """Pages copied so far across every file of one clone, and a callback.

    report(progress 0..1, bytes_transferred) is called after every step;
    cancelled() is polled between steps and stops the copy when true."""

    def __init__(self, total_bytes: int, report=None, cancelled=None):
        self.total_bytes = max(total_bytes, 1)
        self.done_bytes = 0
        self._report = report
        self._cancelled = cancelled

    def advance(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        self.check()
        if self._report is not None:
            self._report(min(self.done_bytes / self.total_bytes, 1.0), self.done_bytes)

    def finish(self) -> None:
        """The copy is complete: size estimates (WAL included) never leave it short of 1.0."""
        if self._report is not None:
            self._report(1.0, self.done_bytes)

    def check(self) -> None:
        if self._cancelled is not None and self._cancelled():
            raise CloneCancelled()


# ---- which files make a PDB


def tablespace_files(folder: str) -> list[str]:
    """The PDB's datafile names: the dictionary first, then its tablespaces."""
    names = [storage.DICTIONARY_FILE]
    for file in storage.read_dictionary(folder)["tablespaces"].values():
        if file not in names:
            names.append(file)
    return names


def file_bytes(path: str) -> int:
    """The file's size; 0 when it is not there (a WAL vanishes when its last connection closes)."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def source_bytes(folder: str) -> int:
    return sum(file_bytes(os.path.join(folder, name + suffix))
               for name in tablespace_files(folder) for suffix in ("", "-wal"))


def folder_bytes(folder: str) -> int:
    """Every datafile and WAL of a PDB folder, safe against files coming and going meanwhile."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    return sum(file_bytes(os.path.join(folder, name)) for name in names if name.endswith((".db", ".db-wal")))


# ---- hot


def _hot_copy_file(source: str, target: str, progress: Progress, pages_per_step: int) -> None:
    src = _core.Connection(source, readonly=True, create=False)
    dst = _core.Connection(target)
    try:
        src.busy_timeout(BUSY_MS)
        dst.busy_timeout(BUSY_MS)
        # One read transaction for the whole copy: backup_step reuses it, so
        # every step reads the same snapshot (see the module docstring).
        execute(src, "BEGIN")
        execute(src, "SELECT count(*) FROM sqlite_schema")
        page_size = execute(src, "PRAGMA page_size")[0][0]
        copied = [0]

        def step(remaining: int, pagecount: int) -> None:
            now_done = pagecount - remaining
            progress.advance((now_done - copied[0]) * page_size)
            copied[0] = now_done

        src.backup_to(dst, pages_per_step, step)
        execute(src, "COMMIT")
        # The copy keeps the source's WAL mode (the header says so); make the
        # file self-contained before it is fsynced and renamed into place.
        execute(dst, "PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        dst.close()
        src.close()


def hot_clone(source_folder: str, stage: str, progress: Progress | None = None,
              pages_per_step: int = DEFAULT_PAGES_PER_STEP, step=None) -> None:
    """step(label) after each file (crash points)."""
    progress = progress or Progress(source_bytes(source_folder))
    for name in tablespace_files(source_folder):
        progress.check()
        _hot_copy_file(os.path.join(source_folder, name), os.path.join(stage, name), progress, pages_per_step)
        if step is not None:
            step(f"copied {name}")


# ---- snapshot


def filesystem_of(path: str) -> tuple[str, str]:
    """(mount point, filesystem type) holding path, from /proc/self/mounts."""
    real = os.path.realpath(path)
    best = ("/", "unknown")
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) < 3:
                continue
            point = fields[1].replace("\\040", " ")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, fields[2])
    return best


def reflink(source: str, target: str) -> None:
    """Clone source's extents into a new file target (FICLONE); OSError if unsupported."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())


_NO_REFLINK = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS)


def snapshot_clone(source_folder: str, stage: str, allow_full_copy: bool = False,
                   progress: Progress | None = None, step=None) -> str:
    """Reflink every datafile (+WAL) of a closed or quiesced PDB; returns "reflink" or "copy"."""
    names = tablespace_files(source_folder)
    progress = progress or Progress(source_bytes(source_folder))
    method = "reflink"
    for name in names:
        progress.check()
        source = os.path.join(source_folder, name)
        target = os.path.join(stage, name)
        lock = _core.Connection(source, create=False)
        try:
            lock.busy_timeout(BUSY_MS)
            execute(lock, "BEGIN IMMEDIATE")  # quiesce: no commit changes db+WAL under us
            try:
                for suffix in ("", "-wal"):
                    if not os.path.exists(source + suffix):
                        continue
                    try:
                        if method == "reflink":
                            reflink(source + suffix, target + suffix)
                        else:
                            shutil.copyfile(source + suffix, target + suffix)
                    except OSError as exc:
                        if exc.errno not in _NO_REFLINK:
                            raise
                        if not allow_full_copy:
                            point, fstype = filesystem_of(source_folder)
                            raise CloneError(
                                f"snapshot clone needs a filesystem with reflink (FICLONE) support; "
                                f"{point} is {fstype}, which does not support it ({os.strerror(exc.errno)}). "
                                'Use XFS (reflink=1) or btrfs, or set "allow_full_copy": true') from None
                        method = "copy"
                        shutil.copyfile(source + suffix, target + suffix)
                    progress.advance(os.path.getsize(target + suffix))
            finally:
                execute(lock, "ROLLBACK")
        finally:
            lock.close()
        if step is not None:
            step(f"cloned {name}")
    return method


# ---- metadata only

_SCHEMA_ORDER = {"table": 0, "index": 1, "view": 2, "trigger": 3}


def _metadata_copy_file(source: str, target: str) -> None:
    src = _core.Connection(source, readonly=True, create=False)
    dst = _core.Connection(target)
    try:
        src.busy_timeout(BUSY_MS)
        execute(src, "BEGIN")
        page_size = execute(src, "PRAGMA page_size")[0][0]
        encoding = execute(src, "PRAGMA encoding")[0][0]
        user_version = execute(src, "PRAGMA user_version")[0][0]
        objects = execute(src, "SELECT type, name, sql FROM sqlite_schema "
                               "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'")
        execute(src, "COMMIT")
        execute(dst, f"PRAGMA page_size={int(page_size)}")
        execute(dst, f"PRAGMA encoding='{encoding}'")
        execute(dst, "PRAGMA journal_mode=WAL")
        execute(dst, "BEGIN")
        for _kind, _name, sql in sorted(objects, key=lambda o: _SCHEMA_ORDER.get(o[0], 9)):
            execute(dst, sql)
        execute(dst, f"PRAGMA user_version={int(user_version)}")
        execute(dst, "COMMIT")
        execute(dst, "PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        dst.close()
        src.close()


def metadata_clone(source_folder: str, stage: str, progress: Progress | None = None, step=None) -> None:
    names = tablespace_files(source_folder)
    progress = progress or Progress(len(names))
    for name in names:
        progress.check()
        source, target = os.path.join(source_folder, name), os.path.join(stage, name)
        if name == storage.DICTIONARY_FILE:
            _hot_copy_file(source, target, Progress(1), DEFAULT_PAGES_PER_STEP)  # users etc. are metadata
        else:
            _metadata_copy_file(source, target)
        progress.advance(os.path.getsize(target))
        if step is not None:
            step(f"copied the schema of {name}")


# ---- identity


def set_identity(stage: str, pdb_id: str, pdb_name: str, guid: str | None = None) -> str:
    """Give the staged copy its own id, name, GUID and creation time; returns the GUID."""
    guid = guid or uuid.uuid4().hex.upper()
    conn = _core.Connection(os.path.join(stage, storage.DICTIONARY_FILE), create=False)
    try:
        conn.busy_timeout(BUSY_MS)
        execute(conn, "BEGIN IMMEDIATE")
        for key, value in (("pdb_id", pdb_id), ("pdb_name", pdb_name), ("guid", guid),
                           ("created_at", storage.now_iso())):
            execute(conn, "INSERT INTO pdb_info(key, value) VALUES (?1, ?2) "
                          "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))
        execute(conn, "DELETE FROM open_mode_history")
        execute(conn, "COMMIT")
        execute(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return guid


def clone_pdb(data_dir: str, source_folder: str, pdb_id: str, pdb_name: str, clone_type: str,
              allow_full_copy: bool = False, progress: Progress | None = None,
              pages_per_step: int = DEFAULT_PAGES_PER_STEP) -> tuple[str, dict]:
    """Build a clone of source_folder in a new stage; returns (stage, facts).

    facts: guid, method (backup/reflink/copy/metadata), bytes, seconds. On any
    error (cancel included) the stage is removed before the error propagates."""
    if clone_type not in CLONE_TYPES:
        raise CloneError(f"clone_type must be one of {', '.join(CLONE_TYPES)}")
    stage = storage._new_stage(data_dir, f"clone-{pdb_id}")
    started = time.monotonic()
    progress = progress or Progress(source_bytes(source_folder))
    step = crashpoint.steps(f"clone_{clone_type}", pdb_name)
    try:
        step("stage made")
        if clone_type == "hot":
            hot_clone(source_folder, stage, progress, pages_per_step, step)
            method = "backup"
        elif clone_type == "snapshot":
            method = snapshot_clone(source_folder, stage, allow_full_copy, progress, step)
        else:
            metadata_clone(source_folder, stage, progress, step)
            method = "metadata"
        guid = set_identity(stage, pdb_id, pdb_name)
        step("identity set")
        for name in os.listdir(stage):
            os.chmod(os.path.join(stage, name), 0o600)
        storage._fsync_tree(stage)
        step("staged")
        progress.finish()
    except BaseException:
        storage.discard(stage)
        raise
    return stage, {"guid": guid, "method": method, "bytes": source_bytes(stage),
                   "seconds": time.monotonic() - started}
