"""PDB operations: create from the seed, open, close, drop, list, get.

Like every service: each public coroutine takes the acting Principal, checks
pdb:read / pdb:manage and the tenant scope (a tenant-scoped token sees and
touches only its tenant's PDBs; another tenant's PDB id is 403
ISOLATION_VIOLATION as on the tenant routes, an unknown or foreign name is
PDB_NOT_FOUND), and answers the REST body.

State machine (the spec's PdbState, lowercase):

    created ──files published──> mounted ──open──> open ──close──> closed ──open──> open
    mounted | closed ──drop──> dropped (final)

Anything else is 400 INVALID_STATE (opening an open PDB, closing one that is
not open, dropping an open one: close it first, as Oracle requires).

Crash safety (DESIGN.md "On disk"): create stages the folder under staging/,
commits the catalog rows in one transaction, then renames the folder into
pdbs/. Drop closes the PDB in its instance, commits `dropped`, then removes
the folder (unless keep_datafiles). `reconcile_storage()` runs at daemon start
before any instance: a staged create whose row committed is published, other
staging leftovers are removed (storage.recover), a dropped PDB's folder that
should be gone is removed, and a live row whose folder is missing is marked
dropped with a system.alert.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import uuid
import weakref
from typing import Any, Callable

from rustymt.catalog import cdb as cdb_rows
from rustymt.catalog import lifecycle as shared_rows
from rustymt.catalog import pdbs as rows
from rustymt.catalog import tenants as tenant_rows
from rustymt.catalog.db import Catalog
from rustymt.engine import crashpoint, storage
from rustymt.events.bus import EventBus
from rustymt.model import timeutil
from rustymt.service import authz, inputs
from rustymt.service.authz import Principal
from rustymt.service.errors import ServiceError
from rustymt.service.passwords import scram_verifier

log = logging.getLogger("rustymt.pdbs")

PERMISSION = {"read": "pdb:read", "manage": "pdb:manage"}
STATES = ("created", "mounted", "open", "closed", "dropped", "unplugged")
# The spec's GraphQL PdbState has no UNPLUGGED: there an unplugged PDB shows as
# MOUNTED (as in Oracle's V$PDBS), and filtering on MOUNTED finds it too.
SHOWN_AS_MOUNTED = ("mounted", "unplugged")
OPEN_MODES = ("READ_WRITE", "READ_ONLY", "UPGRADE", "MIGRATE")
CLOSE_MODES = ("NORMAL", "IMMEDIATE", "ABORT")  # ABORT (GraphQL's CloseMode) = IMMEDIATE here
PDB_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_$]{0,62}"
MIN_PASSWORD_LENGTH = 8
MAX_PAGE_SIZE = 100
TRANSITIONS = {
    "created": {"mounted", "dropped"},
    "mounted": {"open", "dropped"},
    "open": {"closed"},
    "closed": {"open", "dropped"},
    "dropped": set(),
    "unplugged": {"dropped"},  # lifecycle: an unplugged PDB can only be dropped (its files stay for a plug)
}


def check_transition(pdb_id: str, current: str, target: str) -> None:
    if target not in TRANSITIONS[current]:
        raise ServiceError("INVALID_STATE", f"PDB {pdb_id} is {current}; it cannot become {target}",
                           details={"pdb_id": pdb_id, "current_state": current, "requested_state": target})


def upper_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    """An upper-case enum (open and close modes, as the spec spells them), matched case-insensitively."""
    if isinstance(value, str) and value.upper() in choices:
        return value.upper()
    raise inputs.invalid(field, f"must be one of {', '.join(choices)}")


def not_found(pdb_id: str) -> ServiceError:
    return ServiceError("PDB_NOT_FOUND", f"PDB {pdb_id} does not exist", details={"pdb_id": pdb_id})



def check_takes_new_pdbs(tenant: dict | None, tenant_id: str | None = None) -> None:
    """A suspended tenant (payment overdue, abuse) must not grow its storage or
    its PDB count; a terminated one is gone. INVALID_STATE names the state."""
    if tenant is None:
        raise ServiceError("TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist", details={"tenant_id": tenant_id})
    if tenant["state"] in ("suspended", "terminated"):
        raise ServiceError("INVALID_STATE", f"tenant {tenant['tenant_id']} is {tenant['state']}: it cannot get new PDBs",
                           details={"tenant_id": tenant["tenant_id"], "current_state": tenant["state"]})


def check_name_free(conn, pdb_name: str, tenant_id: str | None, field: str) -> None:
    """409 CONFLICT when a live PDB holds the name. Names are one namespace per
    CDB (as Oracle's): when the holder is another tenant's PDB the answer says
    only that the name is not available -- no owner, no id -- as a bucket name
    in a shared namespace does."""
    holder = cdb_rows.live_pdb_named(conn, pdb_name)
    if holder is None:
        return
    if holder["tenant_id"] == tenant_id:
        raise ServiceError("CONFLICT", f"{field}: a PDB named {pdb_name} already exists", field=field,
                           details={"pdb_name": pdb_name, "pdb_id": holder["pdb_id"]})
    raise ServiceError("CONFLICT", f"{field}: the name {pdb_name} is not available (PDB names are unique in the CDB)",
                       field=field, details={"pdb_name": pdb_name})

class PdbService:
    def __init__(self, catalog: Catalog, settings: Any, bus: EventBus, fleet: Any = None,
                 clock: Callable[[], Any] = timeutil.utc_now):
        self.catalog = catalog
        self.settings = settings
        self.bus = bus
        self.fleet = fleet  # rustymt.service.fleet.Fleet; None: files and catalog only (no engine)
        self.clock = clock
        self.data_dir = settings.server.data_dir
        # One operation at a time per PDB (open, close, drop): each re-reads
        # the row under its lock, so two racing opens cannot both succeed.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.staged_hooks: list[Callable[[str, str, str], Any]] = []  # (stage, pdb_id, pdb_name), before the commit

    def _lock(self, pdb_id: str) -> asyncio.Lock:
        return self._locks.setdefault(pdb_id, asyncio.Lock())

    def _now(self) -> str:
        return timeutil.to_iso(self.clock())

    def _state_events(self, row: dict, new_state: str, extra: list[tuple[str, dict]] = ()) -> None:
        for event_type, data in extra:
            self.bus.publish(event_type, row["tenant_id"], data)
        self.bus.publish("pdb.state.changed", row["tenant_id"],
                         {"pdb_id": row["pdb_id"], "old_state": row["state"], "new_state": new_state})

    # ---- lookups with scope

    def _visible(self, principal: Principal, row: dict | None, pdb_id: str, *, by_name: bool = False) -> dict:
        """The row, if the principal may see it. Another tenant's PDB named by
        its id is 403 ISOLATION_VIOLATION, as another tenant's id is on the
        tenant routes; looked up by name it is not found (names are guessable,
        and a scoped caller learns nothing about names that are not its own)."""
        foreign = row is not None and principal.tenant_id is not None and row["tenant_id"] != principal.tenant_id
        if row is None or (foreign and by_name):
            raise not_found(pdb_id)
        if foreign:
            raise ServiceError("ISOLATION_VIOLATION", "this token is scoped to another tenant", details={"pdb_id": pdb_id})
        return row

    async def _load(self, principal: Principal, permission: str, pdb_id: str) -> dict:
        authz.require(principal, permission)
        inputs.text("pdb_id", pdb_id, max_length=128)

        def read():
            with self.catalog.read() as conn:
                return rows.get(conn, pdb_id)

        return self._visible(principal, await asyncio.to_thread(read), pdb_id)

    # ---- create

    def stage(self, pdb_id: str, pdb_name: str, admin_user: str, admin_password: str) -> tuple[str, str]:
        """(staged folder, guid): the seed's copy with the admin user's SCRAM verifier (sync)."""
        try:
            storage.ensure_seed(self.data_dir)
        except OSError:
            # Another creator published the seed between our check and our rename.
            if not os.path.isdir(storage.pdb_dir(self.data_dir, storage.SEED_ID)):
                raise
        guid = uuid.uuid4().hex.upper()
        verifier = scram_verifier(admin_password)
        folder = storage.stage_pdb_from_seed(self.data_dir, pdb_id, pdb_name, admin_user, verifier, guid=guid)
        for hook in self.staged_hooks:
            hook(folder, pdb_id, pdb_name)
        return folder, guid

    def check_capacity(self, conn) -> None:
        limit = self.settings.cdb.max_pdbs
        if rows.count_live(conn) >= limit:
            raise ServiceError("INSUFFICIENT_RESOURCES", f"the CDB already holds its maximum of {limit} PDBs",
                               details={"resource": "pdbs", "max_pdbs": limit})

    def insert_rows(self, conn, pdb_id: str, pdb_name: str, tenant_id: str, guid: str, now: str) -> None:
        """The PDB's catalog rows (state mounted: its files are staged), in the caller's transaction."""
        check_name_free(conn, pdb_name, tenant_id, "pdb_name")
        self.check_capacity(conn)
        cdb_rows.insert_pdb(conn, pdb_id, pdb_name, tenant_id, "mounted", now)
        rows.insert_files(conn, pdb_id, guid)

    async def create(self, principal: Principal, *, pdb_name: str, admin_user: str, admin_password: str,
                     tenant_id: str | None = None, clone_from_seed: bool = True) -> dict:
        authz.require(principal, PERMISSION["manage"], tenant_id)
        tenant_id = tenant_id or principal.tenant_id
        if tenant_id is None:
            raise inputs.invalid("tenant_id", "required: the tenant that owns the PDB")
        tenant_id = inputs.text("tenant_id", tenant_id, max_length=128)
        pdb_name = inputs.text("pdb_name", pdb_name, max_length=63, pattern=PDB_NAME_PATTERN)
        if pdb_name.upper() == storage.SEED_NAME:
            raise inputs.invalid("pdb_name", f"{storage.SEED_NAME} is the seed")
        admin_user = inputs.text("admin_user", admin_user, max_length=256)
        inputs.text("admin_password", admin_password, max_length=1024)
        if len(admin_password) < MIN_PASSWORD_LENGTH:
            raise inputs.invalid("admin_password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
        if clone_from_seed is not True:
            raise inputs.invalid("clone_from_seed", "must be true: a new PDB is a copy of PDB$SEED "
                                 "(copies of other PDBs: POST /api/v1/pdbs/{pdb_id}/clone)")

        def precheck():
            with self.catalog.read() as conn:
                tenant = tenant_rows.get(conn, tenant_id)
                if tenant is None:
                    raise ServiceError("TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist", details={"tenant_id": tenant_id})
                check_takes_new_pdbs(tenant)
                check_name_free(conn, pdb_name, tenant_id, "pdb_name")
                self.check_capacity(conn)
            crashpoint.reached("create", "begun", pdb_name)

        await asyncio.to_thread(precheck)  # cheap refusals before the SCRAM work and the copy
        pdb_id = f"pdb_{secrets.token_hex(6)}"
        stage, guid = await asyncio.to_thread(self.stage, pdb_id, pdb_name, admin_user, admin_password)
        await crashpoint.areached("create", "staged", pdb_name)
        now = self._now()

        def commit():
            with self.catalog.write() as conn:
                check_takes_new_pdbs(tenant_rows.get(conn, tenant_id), tenant_id)  # not suspended meanwhile
                self.insert_rows(conn, pdb_id, pdb_name, tenant_id, guid, now)
            crashpoint.reached("create", "committed", pdb_name)

        try:
            await asyncio.to_thread(commit)
        except BaseException:
            storage.discard(stage)
            raise
        await asyncio.to_thread(storage.publish, self.data_dir, stage, pdb_id)
        await crashpoint.areached("create", "published", pdb_name)
        self.bus.publish("pdb.created", tenant_id, {"pdb_id": pdb_id, "pdb_name": pdb_name, "state": "mounted"})
        self.bus.publish("pdb.state.changed", tenant_id, {"pdb_id": pdb_id, "old_state": "created", "new_state": "mounted"})
        return {"pdb_id": pdb_id, "pdb_name": pdb_name, "state": "mounted", "created_at": now}

    # ---- open / close / drop

    async def open(self, principal: Principal, pdb_id: str, mode: str = "READ_WRITE") -> dict:
        mode = upper_choice("mode", mode, OPEN_MODES)
        async with self._lock(pdb_id):
            row = await self._load(principal, PERMISSION["manage"], pdb_id)
            if row["state"] == "open":
                raise ServiceError("INVALID_STATE", f"PDB {pdb_id} is already open ({row['open_mode']}); close it first",
                                   details={"pdb_id": pdb_id, "current_state": "open", "open_mode": row["open_mode"]})
            check_transition(pdb_id, row["state"], "open")
            return await self.open_row(row, mode)

    async def open_row(self, row: dict, mode: str) -> dict:
        """Open in the PDB's instance, then record it (no permission check: callers did)."""
        if self.fleet is None:
            raise ServiceError("UNAVAILABLE", "no engine instance runs in this process")
        tenant = await asyncio.to_thread(self._tenant_of, row)
        if tenant is None or tenant["state"] == "terminated":
            raise ServiceError("INVALID_STATE", f"PDB {row['pdb_id']} belongs to no live tenant")
        await self.fleet.sync_tenant(row["tenant_id"])
        await self.fleet.open_pdb(row, mode)
        now = self._now()
        await asyncio.to_thread(self._set_state, row["pdb_id"], "open", mode, now)
        self._state_events(row, "open", [("pdb.opened", {"pdb_id": row["pdb_id"], "pdb_name": row["pdb_name"], "open_mode": mode})])
        return {"pdb_id": row["pdb_id"], "state": "open", "open_mode": mode, "opened_at": now}

    def _tenant_of(self, row: dict) -> dict | None:
        with self.catalog.read() as conn:
            return tenant_rows.get(conn, row["tenant_id"]) if row["tenant_id"] else None

    def _set_state(self, pdb_id: str, state: str, mode: str | None, now: str) -> None:
        with self.catalog.write() as conn:
            rows.set_state(conn, pdb_id, state, mode, now)

    async def close(self, principal: Principal, pdb_id: str, mode: str = "NORMAL") -> dict:
        mode = upper_choice("mode", mode, CLOSE_MODES)
        async with self._lock(pdb_id):
            row = await self._load(principal, PERMISSION["manage"], pdb_id)
            check_transition(pdb_id, row["state"], "closed")
            return await self.close_row(row, "NORMAL" if mode == "NORMAL" else "IMMEDIATE")

    async def close_row(self, row: dict, mode: str, new_state: str = "closed") -> dict:
        ended = 0
        if self.fleet is not None:
            ended = (await self.fleet.close_pdb(row, mode))["sessions_ended"]
        now = self._now()
        await asyncio.to_thread(self._set_state, row["pdb_id"], new_state, None, now)
        self._state_events(row, new_state, [("pdb.closed", {"pdb_id": row["pdb_id"], "pdb_name": row["pdb_name"],
                                                            "mode": mode, "sessions_ended": ended})])
        return {"pdb_id": row["pdb_id"], "state": new_state, "closed_at": now, "close_mode": mode, "sessions_ended": ended}

    async def drop(self, principal: Principal, pdb_id: str, keep_datafiles: bool = False) -> dict:
        if not isinstance(keep_datafiles, bool):
            raise inputs.invalid("keep_datafiles", "must be a boolean")
        async with self._lock(pdb_id):
            return await self._drop(principal, pdb_id, keep_datafiles)

    async def _drop(self, principal: Principal, pdb_id: str, keep_datafiles: bool) -> dict:
        row = await self._load(principal, PERMISSION["manage"], pdb_id)
        check_transition(pdb_id, row["state"], "dropped")
        await crashpoint.areached("drop", "begun", pdb_id)
        now = self._now()

        def commit():
            with self.catalog.write() as conn:
                current = rows.get(conn, pdb_id)
                check_transition(pdb_id, current["state"], "dropped")  # not opened meanwhile
                rows.set_state(conn, pdb_id, "dropped", None, now)
                rows.set_datafiles_kept(conn, pdb_id, keep_datafiles)
                shared_rows.set_pdb_profile(conn, pdb_id, None, now)  # a dropped PDB holds no lockdown profile
            crashpoint.reached("drop", "committed", pdb_id)

        await asyncio.to_thread(commit)
        if not keep_datafiles:
            await asyncio.to_thread(storage.remove_pdb_files, self.data_dir, pdb_id)
            await crashpoint.areached("drop", "files removed", pdb_id)
        self._state_events(row, "dropped", [("pdb.dropped", {"pdb_id": pdb_id, "pdb_name": row["pdb_name"],
                                                             "keep_datafiles": keep_datafiles})])
        return {"pdb_id": pdb_id, "pdb_name": row["pdb_name"], "state": "dropped", "dropped_at": now,
                "keep_datafiles": keep_datafiles}

    # ---- read

    async def list(self, principal: Principal, page: int = 1, page_size: int = 20,
                   state: str | tuple[str, ...] | None = None) -> dict:
        """One page of the PDBs the principal may see; `state` one state or a tuple of them."""
        authz.require(principal, PERMISSION["read"])
        page = inputs.integer("page", page, minimum=1, maximum=1 << 31)
        page_size = inputs.integer("page_size", page_size, minimum=1, maximum=MAX_PAGE_SIZE)
        if isinstance(state, tuple):
            state = tuple(inputs.choice("state", one, STATES) for one in state)
        elif state is not None:
            state = inputs.choice("state", state, STATES)

        def query():
            with self.catalog.read() as conn:
                return rows.page(conn, offset=(page - 1) * page_size, limit=page_size, state=state,
                                 tenant_id=principal.tenant_id)

        total, records = await asyncio.to_thread(query)
        bodies = await asyncio.to_thread(lambda: [self._body(record) for record in records])
        return {"pdbs": bodies, "total": total, "page": page, "page_size": page_size}

    async def get(self, principal: Principal, pdb_id: str) -> dict:
        row = await self._load(principal, PERMISSION["read"], pdb_id)
        return await asyncio.to_thread(self._body, row)

    async def get_by_name(self, principal: Principal, pdb_name: str) -> dict:
        authz.require(principal, PERMISSION["read"])

        def read():
            with self.catalog.read() as conn:
                return rows.get_by_name(conn, pdb_name)

        row = self._visible(principal, await asyncio.to_thread(read), pdb_name, by_name=True)
        return await asyncio.to_thread(self._body, row)

    def _body(self, row: dict) -> dict:
        folder = storage.pdb_dir(self.data_dir, row["pdb_id"])
        datafiles, tablespaces = [], []
        if os.path.isdir(folder):
            try:
                datafiles = [entry["file"] for entry in storage.datafiles(folder)]
                tablespaces = ["system", *storage.read_dictionary(folder)["tablespaces"]]
            except Exception as exc:  # noqa: BLE001 - a damaged folder must not hide the row
                log.warning("PDB %s: cannot read its folder: %s", row["pdb_id"], exc)
        return {"pdb_id": row["pdb_id"], "pdb_name": row["pdb_name"], "state": row["state"],
                "open_mode": row["open_mode"], "tenant_id": row["tenant_id"], "datafiles": datafiles,
                "tablespaces": tablespaces, "created_at": row["created_at"], "guid": row.get("guid")}

    # ---- startup

    def reconcile_storage(self) -> list[str]:
        """Finish or roll back what a crash interrupted (before any instance starts)."""
        done = []
        staging = storage.staging_dir(self.data_dir)
        os.makedirs(staging, mode=0o700, exist_ok=True)
        with self.catalog.read() as conn:
            live = {row["pdb_id"]: row for row in rows.live(conn)}
            doomed = rows.dropped_without_kept_files(conn)
        for name in sorted(os.listdir(staging)):
            if not name.startswith("create-"):
                continue
            pdb_id = name[len("create-"):].rsplit("-", 1)[0]
            if pdb_id in live and not os.path.isdir(storage.pdb_dir(self.data_dir, pdb_id)):
                storage.publish(self.data_dir, os.path.join(staging, name), pdb_id)
                done.append(f"published {pdb_id} (catalog committed before the crash)")
        for name in storage.recover(self.data_dir):
            done.append(f"removed staging/{name}")
        for pdb_id in doomed:
            if os.path.isdir(storage.pdb_dir(self.data_dir, pdb_id)):
                storage.remove_pdb_files(self.data_dir, pdb_id)
                done.append(f"removed files of dropped {pdb_id}")
        now = self._now()
        for pdb_id, row in live.items():
            if row.get("datafiles_dir"):  # unplugged, its datafiles moved out beside its manifest
                continue
            if not os.path.isfile(os.path.join(storage.pdb_dir(self.data_dir, pdb_id), storage.DICTIONARY_FILE)):
                with self.catalog.write() as conn:
                    rows.set_state(conn, pdb_id, "dropped", None, now)
                self.bus.publish("system.alert", row["tenant_id"], {
                    "severity": "critical", "source": "pdb storage", "alert": "pdb.files.missing",
                    "message": f"PDB {pdb_id} ({row['pdb_name']}) has no folder; marked dropped"})
                done.append(f"marked {pdb_id} dropped: its folder is missing")
        for line in done:
            log.warning("storage recovery: %s", line)
        return done
