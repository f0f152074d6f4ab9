"""REST: PDB clone (async job), jobs, unplug, plug, lockdown profiles, common users.

Creating POSTs honour `Idempotency-Key` (rustymt.api.idempotency).
"""
from __future__ import annotations


from aiohttp import web

from rustymt.api.idempotency import create_once, idempotent
from rustymt.api.request import json_body, json_response, principal, services
from rustymt.api.routing import Route
from rustymt.api.schema import ERROR, TIMESTAMP, array, boolean, enum, integer, number, obj, string
from rustymt.service.lifecycle import CLONE_TYPES



# ---- schemas

CLONE_TYPE = enum(CLONE_TYPES, description="hot: online copy of a live PDB; snapshot: reflink (closed/READ_ONLY source); "
                  "metadata_only: schema without rows")
CLONE_REQUEST = obj({
    "target_name": string(63), "clone_type": CLONE_TYPE, "open_after_clone": boolean(),
    "allow_full_copy": boolean("snapshot on a filesystem without reflink: copy the files instead of failing"),
}, required=("target_name",))
CLONE_RESPONSE = obj({"job_id": string(), "source_pdb": string(), "target_pdb": string(), "status": string(),
                      "estimated_completion": string(nullable=True), "target_pdb_id": string(),
                      "clone_type": CLONE_TYPE}, required=("job_id", "source_pdb", "target_pdb", "status"))
JOB_RESPONSE = obj({
    "job_id": string(), "kind": string(), "status": enum(("pending", "in_progress", "completed", "failed", "cancelled")),
    "progress": number("0.0 to 1.0"), "bytes_transferred": integer(0), "estimated_completion": string(nullable=True),
    "error": string(nullable=True), "source_pdb": string(nullable=True), "target_pdb": string(nullable=True),
    "source_pdb_id": string(nullable=True), "target_pdb_id": string(nullable=True), "tenant_id": string(nullable=True),
    "created_at": TIMESTAMP, "finished_at": string(nullable=True), "result": {"type": ["object", "null"]},
}, required=("job_id", "status", "progress", "bytes_transferred", "estimated_completion", "error"))
UNPLUG_REQUEST = obj({
    "xml_path": string(4096, description="absolute inside an export root, or relative to the first; must not exist"),
    "keep_datafiles": boolean(
        "true (default): the datafiles stay in the data dir (pdbs/<pdb_id>) and the manifest names them; "
        "false: they move next to the manifest into <manifest stem>_datafiles/ (must not exist): hard-linked "
        "then removed from the data dir on one filesystem, else copied, fsynced and checked against the "
        "manifest's SHA-256; nothing of the PDB stays in the data dir, and plug (copy_datafiles or in place) "
        "works from there. Crash-safe: a crash before the catalog commit leaves the PDB as it was"),
}, required=("xml_path",))
UNPLUG_RESPONSE = obj({"pdb_id": string(), "xml_manifest": string(), "state": string(), "size_mb": number(),
                       "keep_datafiles": boolean(),
                       "datafiles_dir": string(description="absolute folder the manifest names for the datafiles"),
                       "method": enum(("keep", "link", "copy"), description="how the datafiles got there")},
                      required=("pdb_id", "xml_manifest", "state", "size_mb"))
VIOLATION = obj({"severity": enum(("ERROR", "WARNING")), "message": string(), "action": string()})
PLUG_REQUEST = obj({
    "xml_path": string(4096), "pdb_name": string(63), "copy_datafiles": boolean(), "target_path": string(4096),
    "tenant_id": string(128), "dry_run": boolean("only validate: 200 with the violations"),
}, required=("xml_path",))
PLUG_RESPONSE = obj({"pdb_id": string(), "pdb_name": string(), "state": string(), "plugged_at": TIMESTAMP,
                     "tenant_id": string(), "guid": string(), "violations": array(VIOLATION)},
                    required=("pdb_id", "pdb_name", "state", "plugged_at"))
DRY_RUN_RESPONSE = obj({"violations": array(VIOLATION)})
NAMES = array(string(128))
PROFILE_REQUEST = obj({
    "name": string(64), "disabled_statements": NAMES, "pragma_allow": NAMES, "disabled_features": NAMES,
    "rules": array(obj({"action": string(64), "object": string(128, nullable=True),
                        "result": enum(("deny", "ignore", "allow"))}, required=("action",))),
}, required=("name",))
PROFILE = obj({"name": string(), "disabled_statements": NAMES, "pragma_allow": NAMES, "disabled_features": NAMES,
               "rules": array(obj({}, extra=True)), "rule_count": integer(0), "created_at": TIMESTAMP,
               "applied_to": NAMES, "pdbs": NAMES}, required=("name", "rule_count", "created_at", "applied_to"))
APPLY_REQUEST = obj({"profile_name": string(64, nullable=True, description="null removes the PDB's profile")},
                    required=("profile_name",))
APPLY_RESPONSE = obj({"pdb_id": string(), "pdb_name": string(), "lockdown_profile": string(nullable=True),
                      "applied_at": TIMESTAMP, "live_sessions": integer(0, nullable=True)})
COMMON_USER_REQUEST = obj({"username": string(128, description="starts with C##"), "password": string(1024),
                           "pdbs": array(string(128))}, required=("username", "password"))
COMMON_USER = obj({"username": string(), "pdbs": NAMES, "all_pdbs": boolean("every PDB, including later ones"),
                   "created_at": TIMESTAMP, "granted_to": NAMES}, required=("username", "pdbs", "all_pdbs", "created_at"))


def answers(ok_status: int, ok_schema: dict, *errors: int) -> dict[int, dict]:
    return {ok_status: ok_schema, **{status: ERROR for status in (400, 401, 403, 429, *errors)}}


# ---- handlers


async def clone_pdb(request: web.Request) -> web.Response:
    lifecycle, pdb_id = services(request).lifecycle, request.match_info["pdb_id"]
    return await create_once(request, 202, lambda who, **body: lifecycle.clone(who, pdb_id, **body))


async def get_job(request: web.Request) -> web.Response:
    return json_response(await services(request).lifecycle.get_job(principal(request), request.match_info["job_id"]))


async def cancel_job(request: web.Request) -> web.Response:
    await json_body(request)
    return json_response(await services(request).lifecycle.cancel_job(principal(request), request.match_info["job_id"]))


async def unplug_pdb(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await services(request).lifecycle.unplug(principal(request), request.match_info["pdb_id"], **body))


async def plug_pdb(request: web.Request) -> web.Response:
    body = await json_body(request)

    async def run():
        return 201, await services(request).lifecycle.plug(principal(request), **body)

    if body.get("dry_run"):
        return json_response(await services(request).lifecycle.plug(principal(request), **body), status=200)
    return await idempotent(request, run)


async def create_profile(request: web.Request) -> web.Response:
    return await create_once(request, 201, services(request).lifecycle.create_lockdown_profile)


async def list_profiles(request: web.Request) -> web.Response:
    return json_response(await services(request).lifecycle.list_lockdown_profiles(principal(request)))


async def get_profile(request: web.Request) -> web.Response:
    return json_response(await services(request).lifecycle.get_lockdown_profile(principal(request), request.match_info["name"]))


async def delete_profile(request: web.Request) -> web.Response:
    return json_response(await services(request).lifecycle.delete_lockdown_profile(principal(request), request.match_info["name"]))


async def apply_profile(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await services(request).lifecycle.apply_lockdown_profile(
        principal(request), request.match_info["pdb_id"], body["profile_name"]))


async def create_common_user(request: web.Request) -> web.Response:
    return await create_once(request, 201, services(request).lifecycle.create_common_user)


async def list_common_users(request: web.Request) -> web.Response:
    return json_response(await services(request).lifecycle.list_common_users(principal(request)))


PDB = "/api/v1/pdbs/{pdb_id}"
PROFILES = "/api/v1/cdb/lockdown-profiles"
TAGS = ("pdb lifecycle",)
ROUTES = [
    Route("POST", PDB + "/clone", clone_pdb, "pdb:clone", "Clone a PDB (async job: hot, snapshot, metadata_only)",
          CLONE_REQUEST, {**answers(202, CLONE_RESPONSE, 404, 409)}, tags=TAGS),
    Route("GET", "/api/v1/jobs/{job_id}", get_job, "pdb:read", "A job's status, progress and error",
          None, answers(200, JOB_RESPONSE, 404), tags=TAGS),
    Route("POST", "/api/v1/jobs/{job_id}/cancel", cancel_job, "pdb:clone", "Cancel a running job (its staging is removed)",
          obj({}), answers(200, JOB_RESPONSE, 404), tags=TAGS),
    Route("POST", PDB + "/unplug", unplug_pdb, "pdb:manage", "Unplug a closed PDB to an XML manifest (keep_datafiles false: the datafiles move beside it)",
          UNPLUG_REQUEST, answers(200, UNPLUG_RESPONSE, 404), tags=TAGS),
    Route("POST", "/api/v1/pdbs/plug", plug_pdb, "pdb:manage", "Plug an unplugged PDB (dry_run: only the violations)",
          PLUG_REQUEST, {**answers(201, PLUG_RESPONSE, 404, 409), 200: DRY_RUN_RESPONSE}, tags=TAGS),
    Route("POST", PROFILES, create_profile, "cdb:admin", "Create a lockdown profile", PROFILE_REQUEST,
          answers(201, PROFILE, 409), tags=TAGS),
    Route("GET", PROFILES, list_profiles, "cdb:admin", "List lockdown profiles", None,
          answers(200, obj({"lockdown_profiles": array(PROFILE)})), tags=TAGS),
    Route("GET", PROFILES + "/{name}", get_profile, "cdb:admin", "A lockdown profile", None,
          answers(200, PROFILE, 404), tags=TAGS),
    Route("DELETE", PROFILES + "/{name}", delete_profile, "cdb:admin", "Delete an unused lockdown profile", None,
          answers(200, obj({"name": string(), "deleted": boolean()}), 404, 409), tags=TAGS),
    Route("POST", PDB + "/lockdown", apply_profile, "cdb:admin", "Apply (or with null remove) a PDB's lockdown profile",
          APPLY_REQUEST, answers(200, APPLY_RESPONSE, 404), tags=TAGS),
    Route("POST", "/api/v1/cdb/common-users", create_common_user, "common_user:manage",
          "Create a C## common user in every listed PDB (default all, including later ones)",
          COMMON_USER_REQUEST, answers(201, COMMON_USER, 409), tags=TAGS),
    Route("GET", "/api/v1/cdb/common-users", list_common_users, "common_user:manage", "List common users",
          None, answers(200, obj({"common_users": array(COMMON_USER)})), tags=TAGS),
]
