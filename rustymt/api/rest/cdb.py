"""REST: GET /api/v1/cdb/status."""
from __future__ import annotations

from aiohttp import web

from rustymt.api.request import json_response, principal, services
from rustymt.api.routing import Route
from rustymt.api.schema import ERROR, SOURCE_NOTE, array, enum, integer, number, obj, string
from rustymt.service.cdb import PERMISSION

TABLESPACE = obj({"size_gb": number(), "used_gb": number(), "source": SOURCE_NOTE}, required=("size_gb", "used_gb"))
STATUS_RESPONSE = obj({
    "cdb_name": string(), "total_pdbs": integer(0), "max_pdbs": integer(1), "open_pdbs": integer(0),
    "seed_pdb": string(), "uptime_seconds": integer(0),
    "shared_services": obj({"undo_tablespace": TABLESPACE, "temp_tablespace": TABLESPACE}),
    "instances": array(obj({
        "name": string(), "pid": integer(nullable=True), "uptime_seconds": number(), "restarts": integer(0),
        "health": enum(("stopped", "starting", "healthy", "restarting", "failed")),
        "last_exit_code": integer(nullable=True), "placement": enum(("shared", "dedicated")),
        "tenant_id": string(nullable=True), "tenants": array(string()),
    }), ),
})


async def cdb_status(request: web.Request) -> web.Response:
    return json_response(await services(request).cdb.status(principal(request)))


ROUTES = [
    Route("GET", "/api/v1/cdb/status", cdb_status, PERMISSION["status"], "Container database status", None,
          {200: STATUS_RESPONSE, **{status: ERROR for status in (401, 403, 429)}}, tags=("cdb",)),
]
