"""REST: the spec's PDB Operations (create, open) plus close, drop, list and get."""
from __future__ import annotations

from aiohttp import web

from rustymt.api.idempotency import create_once
from rustymt.api.request import json_body, json_response, principal, query, services
from rustymt.api.routing import Route
from rustymt.api.schema import ERROR, TIMESTAMP, array, boolean, enum, integer, obj, string
from rustymt.service.pdbs import CLOSE_MODES, MAX_PAGE_SIZE, OPEN_MODES, PERMISSION, STATES

STATE = enum(STATES, description="PDB state")
OPEN_MODE = enum(OPEN_MODES, description="open mode")
PDB_ID = "/api/v1/pdbs/{pdb_id}"

CREATE_REQUEST = obj({
    "pdb_name": string(63, description="letters, digits, _ and $; starts with a letter; unique in the CDB"),
    "admin_user": string(256, description="the PDB's local administrator"),
    "admin_password": string(1024, description="at least 8 characters; stored only as a SCRAM-SHA-256 verifier"),
    "tenant_id": string(128, description="owner; defaults to the token's tenant"),
    "clone_from_seed": boolean("must be true: a new PDB is a copy of PDB$SEED"),
}, required=("pdb_name", "admin_user", "admin_password"))
CREATE_RESPONSE = obj({"pdb_id": string(), "pdb_name": string(), "state": STATE, "created_at": TIMESTAMP})
OPEN_REQUEST = obj({"mode": OPEN_MODE}, required=())
OPEN_RESPONSE = obj({"pdb_id": string(), "state": STATE, "open_mode": OPEN_MODE, "opened_at": TIMESTAMP})
CLOSE_REQUEST = obj({"mode": enum(CLOSE_MODES, description="NORMAL waits for sessions (409 if some stay); "
                                                           "IMMEDIATE (or ABORT) ends them")}, required=())
CLOSE_RESPONSE = obj({"pdb_id": string(), "state": STATE, "closed_at": TIMESTAMP, "close_mode": string(),
                      "sessions_ended": integer(0)})
DROP_RESPONSE = obj({"pdb_id": string(), "pdb_name": string(), "state": STATE, "dropped_at": TIMESTAMP,
                     "keep_datafiles": boolean()})
PDB_BODY = obj({
    "pdb_id": string(), "pdb_name": string(), "state": STATE, "open_mode": {**OPEN_MODE, "type": ["string", "null"], "enum": [*OPEN_MODES, None]},
    "tenant_id": string(nullable=True), "datafiles": array(string()), "tablespaces": array(string()),
    "created_at": TIMESTAMP, "guid": string(nullable=True),
})
LIST_RESPONSE = obj({"pdbs": array(PDB_BODY), "total": integer(0), "page": integer(1), "page_size": integer(1, MAX_PAGE_SIZE)})


def answers(ok_status: int, ok_schema: dict, *errors: int) -> dict[int, dict]:
    return {ok_status: ok_schema, **{status: ERROR for status in (400, 401, 403, 429, 503, *errors)}}


async def create_pdb(request: web.Request) -> web.Response:
    return await create_once(request, 201, services(request).pdbs.create)


async def open_pdb(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await services(request).pdbs.open(principal(request), request.match_info["pdb_id"], **body))


async def close_pdb(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await services(request).pdbs.close(principal(request), request.match_info["pdb_id"], **body))


async def drop_pdb(request: web.Request) -> web.Response:
    keep = query(request).get("keep_datafiles", "false") == "true"
    return json_response(await services(request).pdbs.drop(principal(request), request.match_info["pdb_id"], keep_datafiles=keep))


async def list_pdbs(request: web.Request) -> web.Response:
    return json_response(await services(request).pdbs.list(principal(request), **query(request)))


async def get_pdb(request: web.Request) -> web.Response:
    return json_response(await services(request).pdbs.get(principal(request), request.match_info["pdb_id"]))


TAGS = ("pdbs",)
ROUTES = [
    Route("POST", "/api/v1/pdbs", create_pdb, PERMISSION["manage"], "Create a PDB from PDB$SEED (state mounted)",
          CREATE_REQUEST, answers(201, CREATE_RESPONSE, 404, 409, 507), tags=TAGS),
    Route("GET", "/api/v1/pdbs", list_pdbs, PERMISSION["read"], "List PDBs, paginated, filtered by state",
          None, answers(200, LIST_RESPONSE),
          query={"page": integer(1, description="1-based page number (default 1)"),
                 "page_size": integer(1, MAX_PAGE_SIZE, description="PDBs per page (default 20)"),
                 "state": STATE}, tags=TAGS),
    Route("GET", PDB_ID, get_pdb, PERMISSION["read"], "PDB details: state, open mode, datafiles, tablespaces",
          None, answers(200, PDB_BODY, 404), tags=TAGS),
    Route("POST", PDB_ID + "/open", open_pdb, PERMISSION["manage"], "Open a PDB (READ_WRITE by default)",
          OPEN_REQUEST, answers(200, OPEN_RESPONSE, 404), tags=TAGS),
    Route("POST", PDB_ID + "/close", close_pdb, PERMISSION["manage"], "Close an open PDB",
          CLOSE_REQUEST, answers(200, CLOSE_RESPONSE, 404, 409), tags=TAGS),
    Route("DELETE", PDB_ID, drop_pdb, PERMISSION["manage"], "Drop a mounted or closed PDB",
          None, answers(200, DROP_RESPONSE, 404),
          query={"keep_datafiles": enum(("true", "false"), description="keep the PDB's folder (default false)")},
          tags=TAGS),
]
