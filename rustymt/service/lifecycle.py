"""PDB lifecycle operations: clone (async job), unplug, plug, lockdown
profiles, common users. Each public coroutine takes the acting Principal,
checks its permission and tenant scope, and answers the REST body.

The file work is rustymt.engine.pdbops (stage, commit, rename — the order
recovery relies on); this module decides, checks and records. PDB rows and
the engine are the PDB service's (services.pdbs, services.fleet).

Paths given by the operator (unplug xml_path, plug xml_path / target_path)
are confined to the configured export roots ([lifecycle] export_roots; empty
= <data_dir>/exports): a relative path resolves under the first root; `..`
components, paths outside every root and symlinks that lead outside are
refused (400 INVALID_REQUEST) before anything is touched.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import secrets
import threading

from rustymt.catalog import jobs as job_rows
from rustymt.catalog import lifecycle as shared_rows
from rustymt.catalog import pdbs as pdb_rows
from rustymt.catalog import tenants as tenant_rows
from rustymt.engine import clone, common_users, crashpoint, lockdown, manifest, pdbops, recovery, storage
from rustymt.engine.control import ControlError
from rustymt.service import authz, inputs
from rustymt.service.errors import ServiceError
from rustymt.service.jobs import JobRunner, public
from rustymt.service.passwords import scram_verifier
from rustymt.service.pdbs import PDB_NAME_PATTERN, check_name_free, check_takes_new_pdbs

log = logging.getLogger("rustymt.lifecycle")

CLONE_TYPES = clone.CLONE_TYPES
UNPLUGGABLE = ("closed", "mounted")
GIB = 1 << 30
MIN_PASSWORD_LENGTH = 8
PROFILE_PATTERN = r"[A-Za-z][A-Za-z0-9_$]{0,63}"


# ---- paths


def export_roots(settings) -> list[str]:
    roots = list(getattr(getattr(settings, "lifecycle", None), "export_roots", ()) or ())
    if not roots:
        roots = [os.path.join(settings.server.data_dir, "exports")]
    return [os.path.abspath(root) for root in roots]


def export_dir_for(xml: str) -> str:
    """Where unplug with keep_datafiles false moves the datafiles: <manifest stem>_datafiles/ beside it."""
    return os.path.splitext(xml)[0] + "_datafiles"


def confine_path(field: str, path, roots: list[str]) -> str:
    """The absolute, symlink-free path inside one of roots; 400 otherwise."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise inputs.invalid(field, "must be a non-empty path")
    if ".." in path.replace("\\", "/").split("/"):
        raise inputs.invalid(field, "must not contain '..'")
    absolute = path if os.path.isabs(path) else os.path.join(roots[0], path)
    real = os.path.realpath(absolute)
    for root in roots:
        real_root = os.path.realpath(root)
        if real == real_root or real.startswith(real_root.rstrip("/") + "/"):
            return real
    raise inputs.invalid(field, f"must be inside an export root ({', '.join(roots)})"
                         + (" (a symlink leads outside)" if os.path.normpath(absolute) != real else ""))


class LifecycleService:
    def __init__(self, catalog, settings, bus, pdbs, fleet=None):
        self.catalog = catalog
        self.settings = settings
        self.bus = bus
        self.pdbs = pdbs
        self.fleet = fleet
        self.data_dir = settings.server.data_dir
        self.jobs = JobRunner(catalog, bus, self.data_dir)
        self._claims: set[str] = set()  # manifest and export paths of unplugs under way
        self._claims_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- startup

    def recover(self) -> list:
        """Before the PDB service's own reconcile: finish committed clone/plug
        stages and in-place releases, fail jobs whose worker died."""
        failed = self.jobs.recover()
        if not os.path.isdir(storage.staging_dir(self.data_dir)):
            return failed
        with self.catalog.read() as conn:
            states = {row["pdb_id"]: row["state"] for row in conn.execute("SELECT pdb_id, state FROM pdbs")}
        done = recovery.recover(self.data_dir, states, kinds=("clone", "plug", "unplug"))
        for what, action in done:
            log.warning("lifecycle recovery: %s %s", what, action)
        return [*failed, *done]

    # ---- helpers

    def _now(self) -> str:
        return storage.now_iso()

    async def _load(self, principal, permission: str, pdb_id: str) -> dict:
        return await self.pdbs._load(principal, permission, pdb_id)

    def _common_users(self) -> list[dict]:
        with self.catalog.read() as conn:
            return shared_rows.common_users(conn)

    def _check_storage_quota(self, tenant_id: str, extra_bytes: int) -> None:
        with self.catalog.read() as conn:
            tenant = tenant_rows.get(conn, tenant_id)
            live = [row["pdb_id"] for row in pdb_rows.live(conn) if row["tenant_id"] == tenant_id]
        if tenant is None:
            raise ServiceError("TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist")
        # Other PDBs of the tenant may be open and checkpointing meanwhile: their WALs come and go.
        used = sum(clone.folder_bytes(storage.pdb_dir(self.data_dir, pdb_id)) for pdb_id in live)
        limit = int(tenant["storage_gb"]) * GIB
        if used + extra_bytes > limit:
            details = {"resource": "storage", "used_bytes": used, "needed_bytes": extra_bytes, "quota_bytes": limit}
            self.bus.publish("quota.exceeded", tenant_id, {**details, "limit": int(tenant["storage_gb"])})
            raise ServiceError("QUOTA_EXCEEDED", f"tenant {tenant_id} would use {used + extra_bytes} bytes of "
                               f"storage, its quota is {limit}", details=details)

    def _may_add_pdb(self, tenant_id: str, pdb_name: str | None = None, field: str = "pdb_name") -> None:
        """The tenant takes new PDBs (not suspended) and, when given, the name is free."""
        with self.catalog.read() as conn:
            check_takes_new_pdbs(tenant_rows.get(conn, tenant_id), tenant_id)
            if pdb_name is not None:
                check_name_free(conn, pdb_name, tenant_id, field)

    # ---- clone

    async def clone(self, principal, pdb_id: str, *, target_name: str, clone_type: str = "hot",
                    open_after_clone: bool = False, allow_full_copy: bool = False) -> dict:
        row = await self._load(principal, "pdb:clone", pdb_id)
        authz.require(principal, "pdb:clone", row["tenant_id"])
        target_name = inputs.text("target_name", target_name, max_length=63, pattern=PDB_NAME_PATTERN)
        if target_name.upper() == storage.SEED_NAME:
            raise inputs.invalid("target_name", f"{storage.SEED_NAME} is the seed")
        if not isinstance(clone_type, str) or clone_type.lower() not in CLONE_TYPES:
            raise inputs.invalid("clone_type", f"must be one of {', '.join(CLONE_TYPES)}")
        clone_type = clone_type.lower()
        for field, value in (("open_after_clone", open_after_clone), ("allow_full_copy", allow_full_copy)):
            if not isinstance(value, bool):
                raise inputs.invalid(field, "must be a boolean")
        if row["state"] not in ("mounted", "open", "closed"):
            raise ServiceError("INVALID_STATE", f"PDB {pdb_id} is {row['state']}; only a mounted, open or closed PDB "
                               "can be cloned", details={"pdb_id": pdb_id, "current_state": row["state"]})
        if clone_type == "snapshot" and row["state"] == "open" and row["open_mode"] != "READ_ONLY":
            raise ServiceError("INVALID_STATE", f"a snapshot clone needs the source closed or open READ_ONLY "
                               f"(PDB {pdb_id} is open {row['open_mode']}); use a hot clone for a live source",
                               details={"pdb_id": pdb_id, "current_state": "open", "open_mode": row["open_mode"]})
        source = storage.pdb_dir(self.data_dir, pdb_id)
        total = await asyncio.to_thread(clone.source_bytes, source)
        await asyncio.to_thread(self._may_add_pdb, row["tenant_id"], target_name, "target_name")
        await asyncio.to_thread(self._check_storage_quota, row["tenant_id"],
                                0 if clone_type == "metadata_only" else total)
        self._loop = asyncio.get_running_loop()
        target_id = f"pdb_{secrets.token_hex(6)}"
        job_id = self.jobs.new_job_id("clone")
        job = {"job_id": job_id, "kind": "clone", "tenant_id": row["tenant_id"], "source_pdb_id": pdb_id,
               "target_pdb_id": target_id,
               "request": {"source_pdb_name": row["pdb_name"], "target_name": target_name, "clone_type": clone_type,
                           "open_after_clone": open_after_clone, "allow_full_copy": allow_full_copy}}
        work = self._clone_work(job, row, source, target_id, target_name, clone_type, allow_full_copy,
                                open_after_clone, total)
        copied = 0 if clone_type in ("metadata_only", "snapshot") else total  # reflinks and schemas copy ~no bytes
        started = await asyncio.to_thread(functools.partial(self.jobs.start, job, work, expected_bytes=copied,
                                                            rate_key=f"clone:{clone_type}"))
        return {"job_id": job_id, "source_pdb": row["pdb_name"], "target_pdb": target_name,
                "status": started["status"], "estimated_completion": started.get("estimated_completion"),
                "target_pdb_id": target_id, "clone_type": clone_type}

    def _clone_work(self, job, row, source, target_id, target_name, clone_type, allow_full_copy, open_after, total):
        loop = self._loop

        def work(report, cancelled):
            crashpoint.reached(f"clone_{clone_type}", "job started", target_name)  # row in_progress, no stage yet
            guid = {}

            def on_stage(stage):
                self.jobs.set_stage(job["job_id"], stage)
                guid["value"] = storage.read_dictionary(stage)["info"]["guid"]
                common_users.sync(stage, target_id, target_name, self._common_users())
                if cancelled():
                    raise clone.CloneCancelled()

            def commit(facts):
                now = self._now()
                with self.catalog.write() as conn:
                    self.pdbs.insert_rows(conn, target_id, target_name, row["tenant_id"], guid["value"], now)
                    # Same transaction as the PDB row: a restart from here on finds the job's
                    # PDB committed and completes the job instead of failing it (JobRunner.recover).
                    job_rows.update(conn, job["job_id"], progress=1.0, stage=None, updated_at=now,
                                    result={"pdb_id": target_id, "pdb_name": target_name, "method": facts["method"],
                                            "bytes": facts["bytes"], "state": "mounted"})

            try:
                _folder, facts = pdbops.clone_from(self.data_dir, source, target_id, target_name, clone_type, commit,
                                                   allow_full_copy=allow_full_copy,
                                                   progress=clone.Progress(total, report, cancelled),
                                                   on_stage=on_stage)
            except clone.CloneError as exc:
                if isinstance(exc, clone.CloneCancelled):
                    raise
                raise ServiceError("INVALID_REQUEST", str(exc)) from None
            self.bus.publish("pdb.created", row["tenant_id"], {"pdb_id": target_id, "pdb_name": target_name,
                                                               "state": "mounted", "cloned_from": row["pdb_id"]})
            self.bus.publish("pdb.state.changed", row["tenant_id"],
                             {"pdb_id": target_id, "old_state": "created", "new_state": "mounted"})
            result = {"pdb_id": target_id, "pdb_name": target_name, "method": facts["method"], "bytes": facts["bytes"],
                      "state": "mounted"}
            if open_after and loop is not None:
                with self.catalog.read() as conn:
                    new_row = pdb_rows.get(conn, target_id)
                try:
                    asyncio.run_coroutine_threadsafe(self.pdbs.open_row(new_row, "READ_WRITE"), loop).result(60)
                    result["state"] = "open"
                except Exception as exc:  # the clone stands; opening is reported, not undone
                    result["open_error"] = str(exc)
            return result

        return work

    async def get_job(self, principal, job_id: str) -> dict:
        authz.require(principal, "pdb:read")
        job = await asyncio.to_thread(self.jobs.get, inputs.text("job_id", job_id, max_length=128))
        if principal.tenant_id is not None and job["tenant_id"] != principal.tenant_id:
            raise ServiceError("NOT_FOUND", f"job {job_id} does not exist")
        return public(job)

    async def cancel_job(self, principal, job_id: str) -> dict:
        authz.require(principal, "pdb:clone")
        await self.get_job(principal, job_id)
        return public(await asyncio.to_thread(self.jobs.cancel, job_id))

    # ---- unplug / plug

    async def unplug(self, principal, pdb_id: str, *, xml_path: str, keep_datafiles: bool = True) -> dict:
        """keep_datafiles true: the datafiles stay in pdbs/<pdb_id>, the manifest names
        that folder. false: they move to <manifest stem>_datafiles/ next to the
        manifest (a hard link then the PDB folder's removal on one filesystem, else
        copied, fsynced and checked against the manifest's SHA-256) and nothing of
        the PDB stays in the data dir. Crash-safe: rustymt.engine.pdbops.unplug."""
        row = await self._load(principal, "pdb:manage", pdb_id)
        authz.require(principal, "pdb:manage", row["tenant_id"])
        if not isinstance(keep_datafiles, bool):
            raise inputs.invalid("keep_datafiles", "must be a boolean")
        roots = export_roots(self.settings)
        xml = confine_path("xml_path", xml_path, roots)
        exported = None if keep_datafiles else confine_path("xml_path", export_dir_for(xml), roots)
        if row["state"] == "unplugged":
            raise ServiceError("INVALID_STATE", f"PDB {pdb_id} is already unplugged",
                               details={"pdb_id": pdb_id, "current_state": row["state"]})
        if row["state"] not in UNPLUGGABLE:
            raise ServiceError("INVALID_STATE", f"PDB {pdb_id} is {row['state']}; close it before unplugging",
                               details={"pdb_id": pdb_id, "current_state": row["state"]})
        claimed = [path for path in (xml, exported) if path]
        with self._claims_lock:  # two unplugs never race for one manifest or export folder
            for path in claimed:
                if path in self._claims or os.path.lexists(path):  # never overwrite (maybe another PDB's)
                    raise inputs.invalid("xml_path", f"{path} already exists")
            self._claims.update(claimed)
        try:
            async with self.pdbs._lock(pdb_id):  # no open, close or drop of this PDB meanwhile
                answer = await asyncio.to_thread(self._unplug_files, pdb_id, row["tenant_id"], xml, exported)
        finally:
            with self._claims_lock:
                self._claims.difference_update(claimed)
        self.bus.publish("pdb.state.changed", row["tenant_id"],
                         {"pdb_id": pdb_id, "old_state": row["state"], "new_state": "unplugged"})
        return {"pdb_id": pdb_id, "xml_manifest": answer["xml_manifest"], "state": "unplugged",
                # whole MB as the spec shows, rounded up: a PDB with data is never 0 MB
                "size_mb": math.ceil(answer["size_bytes"] / (1 << 20)), "keep_datafiles": keep_datafiles,
                "datafiles_dir": answer["datafiles_dir"], "method": answer["method"]}

    def _unplug_files(self, pdb_id: str, tenant_id: str | None, xml: str, exported: str | None) -> dict:
        os.makedirs(os.path.dirname(xml), mode=0o700, exist_ok=True)

        def commit(_answer):
            with self.catalog.write() as conn:
                current = pdb_rows.get(conn, pdb_id)
                if current["state"] not in UNPLUGGABLE:
                    raise ServiceError("INVALID_STATE", f"PDB {pdb_id} became {current['state']}")
                pdb_rows.set_state(conn, pdb_id, "unplugged", None, self._now())
                pdb_rows.set_datafiles_dir(conn, pdb_id, exported)

        return pdbops.unplug(self.data_dir, pdb_id, xml, tenant_id, commit, exported)

    def _plug_checks(self, xml: str, pdb_name: str | None, in_place: bool):
        try:
            parsed = manifest.read(xml)
        except FileNotFoundError:
            raise inputs.invalid("xml_path", f"no manifest at {xml}") from None
        except manifest.ManifestError as exc:
            return None, [manifest.violation("ERROR", str(exc), "Give the XML manifest written by unplug")]
        with self.catalog.read() as conn:
            live = pdb_rows.live(conn)
        # An in-place plug retires the unplugged row it comes from: its name is free then.
        names = {r["pdb_name"] for r in live if not (in_place and r["pdb_id"] == parsed["pdb_id"])}
        guids = {r.get("guid") for r in live if r["state"] != "unplugged" and r.get("guid")}
        source_dir = parsed["datafiles_dir"]
        roots = [*export_roots(self.settings), storage.pdbs_dir(self.data_dir)]
        try:
            confine_path("datafiles_dir", source_dir, roots)
        except ServiceError:
            return parsed, [manifest.violation("ERROR", f"datafiles_dir {source_dir} is outside the export roots",
                                               "Move the unplugged files under an export root")]
        return parsed, manifest.check_plug_compatibility(parsed, source_dir, names, guids, pdb_name)

    async def plug(self, principal, *, xml_path: str, pdb_name: str | None = None, copy_datafiles: bool = True,
                   target_path: str | None = None, tenant_id: str | None = None, dry_run: bool = False) -> dict:
        """dry_run: {"violations"} only (REST 200); else the plugged PDB (REST 201)."""
        authz.require(principal, "pdb:manage", tenant_id)
        xml = confine_path("xml_path", xml_path, export_roots(self.settings))
        if pdb_name is not None:
            pdb_name = inputs.text("pdb_name", pdb_name, max_length=63, pattern=PDB_NAME_PATTERN)
        for field, value in (("copy_datafiles", copy_datafiles), ("dry_run", dry_run)):
            if not isinstance(value, bool):
                raise inputs.invalid(field, "must be a boolean")
        if target_path is not None:
            # The engine serves PDB folders from <data_dir>/pdbs only: target_path must name it (or be left out).
            target = confine_path("target_path", target_path, [*export_roots(self.settings), storage.pdbs_dir(self.data_dir)])
            if target != os.path.realpath(storage.pdbs_dir(self.data_dir)):
                raise inputs.invalid("target_path", f"plugged datafiles live in {os.path.realpath(storage.pdbs_dir(self.data_dir))}; "
                                     "give that directory or leave target_path out")
        parsed, violations = await asyncio.to_thread(self._plug_checks, xml, pdb_name, not copy_datafiles)
        if parsed is not None and principal.tenant_id is not None and parsed.get("tenant_id") not in (None, principal.tenant_id):
            # a tenant plugs only what it unplugged: another tenant's manifest does not exist for it
            raise inputs.invalid("xml_path", f"no manifest of this tenant at {xml}")
        if dry_run:
            return {"violations": violations}
        if any(v["severity"] == "ERROR" for v in violations):
            raise ServiceError("INVALID_REQUEST", f"the PDB cannot be plugged: {len(violations)} violation(s)",
                               details={"violations": violations})
        owner = tenant_id or principal.tenant_id or parsed.get("tenant_id")
        if owner is None:
            raise inputs.invalid("tenant_id", "required: the manifest names no tenant")
        authz.check_tenant_scope(principal, owner)
        name = pdb_name or parsed["name"]
        # (the name: the plug checks above; an in-place plug takes over its unplugged row's name)
        await asyncio.to_thread(self._may_add_pdb, owner)
        pdb_id = f"pdb_{secrets.token_hex(6)}"
        size = sum(d["size"] for d in parsed["datafiles"])
        await asyncio.to_thread(self._check_storage_quota, owner, size if copy_datafiles else 0)
        unplugged_source = parsed["pdb_id"]

        def run():
            crashpoint.reached("plug_copy" if copy_datafiles else "plug_in_place", "validated", name)
            now = self._now()

            def commit():
                with self.catalog.write() as conn:
                    source_row = pdb_rows.get(conn, unplugged_source)
                    if not copy_datafiles and source_row is not None and source_row["state"] == "unplugged":
                        # its files now belong to the plugged PDB (and so may its name): retired for good
                        pdb_rows.set_state(conn, unplugged_source, "dropped", None, now)
                        pdb_rows.set_datafiles_kept(conn, unplugged_source, True)
                    if pdb_rows.guid_plugged(conn, parsed["guid"]):  # a concurrent plug of the same set won
                        raise ServiceError("CONFLICT", f"a PDB with GUID {parsed['guid']} is already plugged in",
                                           field="xml_path")
                    self.pdbs.insert_rows(conn, pdb_id, name, owner, parsed["guid"], now)

            def before_publish(stage):
                common_users.sync(stage, pdb_id, name, self._common_users())

            folder = pdbops.plug(self.data_dir, parsed, parsed["datafiles_dir"], pdb_id, name, copy_datafiles,
                                 commit, before_publish)  # in place: the emptied datafiles folder goes too
            return folder, now

        _folder, now = await asyncio.to_thread(run)
        self.bus.publish("pdb.created", owner, {"pdb_id": pdb_id, "pdb_name": name, "state": "mounted",
                                                "plugged_from": xml})
        return {"pdb_id": pdb_id, "pdb_name": name, "state": "mounted", "plugged_at": now,
                     "tenant_id": owner, "guid": parsed["guid"], "violations": violations}

    # ---- lockdown profiles

    async def create_lockdown_profile(self, principal, name: str, disabled_statements: list | None = None,
                                      pragma_allow: list | None = None, disabled_features: list | None = None,
                                      rules: list | None = None) -> dict:
        authz.require(principal, "cdb:admin")
        name = inputs.text("name", name, max_length=64, pattern=PROFILE_PATTERN)
        given = {"disabled_statements": disabled_statements, "pragma_allow": pragma_allow,
                 "disabled_features": disabled_features, "rules": rules}
        body = {k: v for k, v in given.items() if v}
        try:
            rules = lockdown.compile_profile(body)
        except ValueError as exc:
            raise ServiceError("INVALID_REQUEST", str(exc), field="rules") from None
        now = self._now()

        def insert():
            with self.catalog.write() as conn:
                if not shared_rows.insert_profile(conn, name, body, lockdown.rules_json(rules), now):
                    raise ServiceError("CONFLICT", f"a lockdown profile named {name} exists", field="name")

        await asyncio.to_thread(insert)
        return self._profile_body(None, {"name": name, "spec": body, "rules": rules, "created_at": now})

    @staticmethod
    def _profile_body(conn, profile: dict) -> dict:
        applied = shared_rows.profile_users(conn, profile["name"]) if conn is not None else []
        spec = profile["spec"]
        return {"name": profile["name"], "disabled_statements": spec.get("disabled_statements", []),
                "pragma_allow": spec.get("pragma_allow", []), "disabled_features": spec.get("disabled_features", []),
                "rules": spec.get("rules", []), "rule_count": len(profile["rules"]),
                "created_at": profile["created_at"], "applied_to": applied, "pdbs": applied}

    async def list_lockdown_profiles(self, principal) -> dict:
        authz.require(principal, "cdb:admin")

        def read():
            with self.catalog.read() as conn:
                return [self._profile_body(conn, p) for p in shared_rows.profiles(conn)]

        return {"lockdown_profiles": await asyncio.to_thread(read)}

    async def get_lockdown_profile(self, principal, name: str) -> dict:
        authz.require(principal, "cdb:admin")

        def read():
            with self.catalog.read() as conn:
                profile = shared_rows.profile(conn, name)
                if profile is None:
                    raise ServiceError("NOT_FOUND", f"no lockdown profile {name}")
                return self._profile_body(conn, profile)

        return await asyncio.to_thread(read)

    async def delete_lockdown_profile(self, principal, name: str) -> dict:
        authz.require(principal, "cdb:admin")

        def delete():
            with self.catalog.write() as conn:
                if shared_rows.profile(conn, name) is None:
                    raise ServiceError("NOT_FOUND", f"no lockdown profile {name}")
                users = shared_rows.profile_users(conn, name)
                if users:
                    raise ServiceError("CONFLICT", f"lockdown profile {name} is applied to {', '.join(users)}",
                                       details={"applied_to": users})
                shared_rows.delete_profile(conn, name)

        await asyncio.to_thread(delete)
        return {"name": name, "deleted": True}

    async def apply_lockdown_profile(self, principal, pdb_id: str, profile_name: str | None) -> dict:
        authz.require(principal, "cdb:admin")
        row = await self._load(principal, "pdb:manage", pdb_id)
        if row["state"] in ("dropped", "unplugged"):
            raise ServiceError("INVALID_STATE", f"PDB {pdb_id} is {row['state']}")

        def read():
            with self.catalog.read() as conn:
                return shared_rows.profile(conn, profile_name) if profile_name else None

        profile = await asyncio.to_thread(read)
        if profile_name and profile is None:
            raise ServiceError("NOT_FOUND", f"no lockdown profile {profile_name}", field="profile_name")
        rules = profile["rules"] if profile else []
        name = profile["name"] if profile else None
        live_sessions = None
        if row["state"] == "open" and self.fleet is not None:
            try:
                answer = await self.fleet._request(row["tenant_id"], "set_lockdown",
                                                   {"pdb_id": pdb_id, "profile": name, "rules": rules})
                live_sessions = answer.get("sessions")
            except ControlError as exc:
                raise ServiceError("UNAVAILABLE", f"the PDB's instance did not apply the profile: {exc}") from None
        else:
            await asyncio.to_thread(storage.write_lockdown, storage.pdb_dir(self.data_dir, pdb_id), name,
                                    lockdown.rules_json([(r["action"], r["object"], r["result"]) for r in rules]))
        now = self._now()

        def record():
            with self.catalog.write() as conn:
                shared_rows.set_pdb_profile(conn, pdb_id, name, now)

        await asyncio.to_thread(record)
        return {"pdb_id": pdb_id, "pdb_name": row["pdb_name"], "lockdown_profile": name, "applied_at": now,
                "live_sessions": live_sessions}

    # ---- common users

    async def create_common_user(self, principal, *, username: str, password: str, pdbs: list[str] | None = None) -> dict:
        authz.require(principal, "common_user:manage")
        username = inputs.text("username", username, max_length=128)
        if not common_users.is_common_name(username):
            raise inputs.invalid("username", f"a common user's name starts with {common_users.PREFIX}")
        inputs.text("password", password, max_length=1024)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise inputs.invalid("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
        if pdbs is not None and (not isinstance(pdbs, list) or not all(isinstance(p, str) and p for p in pdbs)):
            raise inputs.invalid("pdbs", "must be a list of PDB ids or names")
        verifier = await asyncio.to_thread(scram_verifier, password)
        now = self._now()

        def insert():
            with self.catalog.write() as conn:
                if not shared_rows.insert_common_user(conn, username, verifier, pdbs, now):
                    raise ServiceError("CONFLICT", f"common user {username} exists", field="username")
                return [r for r in pdb_rows.live(conn) if r["state"] != "unplugged"]

        live = await asyncio.to_thread(insert)
        entry = [{"username": username, "verifier": verifier, "pdbs": pdbs}]
        granted = []

        def write_all():
            for row in live:
                folder = storage.pdb_dir(self.data_dir, row["pdb_id"])
                if os.path.isdir(folder) and common_users.sync(folder, row["pdb_id"], row["pdb_name"], entry):
                    granted.append(row["pdb_id"])

        await asyncio.to_thread(write_all)
        return {"username": username, "pdbs": pdbs or [], "all_pdbs": pdbs is None, "created_at": now,
                "granted_to": granted}

    async def list_common_users(self, principal) -> dict:
        authz.require(principal, "common_user:manage")
        users = await asyncio.to_thread(self._common_users)
        return {"common_users": [{"username": u["username"], "pdbs": u["pdbs"] or [], "all_pdbs": u["pdbs"] is None,
                                  "created_at": u["created_at"]} for u in users]}

    def sync_common_users(self, folder: str, pdb_id: str, pdb_name: str) -> int:
        """For the PDB service's create: write the covering common users into a staged PDB."""
        return common_users.sync(folder, pdb_id, pdb_name, self._common_users())
