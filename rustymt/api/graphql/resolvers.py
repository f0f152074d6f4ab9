"""Queries, mutations and object fields: thin calls into the service layer.

The service layer checks permissions and tenant scope (rustymt.service.authz,
the same checks REST runs) and answers with dicts shaped like the REST
bodies, in snake_case; `dict_field` reads them under the GraphQL camelCase
names, so most fields need no resolver of their own. Enum values travel as
the service spells them (lowercase) and are upper-cased on output
(schema.py).

Failures: a ServiceError raised in a query becomes a GraphQL error carrying
its code in extensions.code (execution.py). A mutation answers the spec's
union instead — TenantError/PdbError with the code — except for
authentication and authorization refusals, which stay GraphQL errors as for
queries. Operations whose service does not exist yet (PDB lifecycle, shared
services) answer UNAVAILABLE naming what is missing, never invented data.
"""
from __future__ import annotations

import functools
import json
import re
from typing import Any, Callable

from graphql import GraphQLResolveInfo

from rustymt.api.graphql.context import Context
from rustymt.api.graphql.paging import connection, window_of
from rustymt.service import authz
from rustymt.service.errors import ServiceError
from rustymt.service.pdbs import SHOWN_AS_MOUNTED

# Refusals about who is asking: GraphQL errors even inside mutations.
AUTH_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "ISOLATION_VIOLATION", "QUOTA_EXCEEDED"})

# GraphQL field -> REST key where the name is not the camelCase of the key.
FIELD_KEYS = {
    ("ResourceUsage", "currentIops"): "iops",
    ("BufferPoolIsolationStats", "residentPages"): "resident",
    ("BufferPoolIsolationStats", "pinnedPages"): "pinned",
    ("BufferPoolIsolationStats", "minPages"): "min_frames",
    ("BufferPoolIsolationStats", "maxPages"): "max_frames",
}

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


@functools.lru_cache(maxsize=1024)
def snake(name: str) -> str:
    return _CAMEL.sub(r"_\1", name).lower()


def dict_field(source: Any, info: GraphQLResolveInfo, **_args) -> Any:
    """The default resolver: a REST-shaped dict read under a camelCase name."""
    if isinstance(source, dict):
        key = FIELD_KEYS.get((info.parent_type.name, info.field_name)) or snake(info.field_name)
        if key in source:
            return source[key]
        return source.get(info.field_name)
    return getattr(source, info.field_name, None)


def ctx(info: GraphQLResolveInfo) -> Context:
    return info.context


def lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def service_method(services: Any, area: str, name: str, what: str) -> Callable:
    """services.<area>.<name>, or UNAVAILABLE saying which operation this build lacks."""
    method = getattr(getattr(services, area, None), name, None)
    if method is None:
        raise ServiceError("UNAVAILABLE", f"{what} is not available in this build yet (no service for it)",
                           details={"service": f"{area}.{name}"})
    return method


# ---------------------------------------------------------------- Tenant fields


def tenant_field(source: dict, info: GraphQLResolveInfo) -> Any:
    """A Tenant field from what the parent already holds, else from one batched describe.

    Synchronous when the value is at hand: graphql-core then completes it
    without scheduling a task, which is most of the cost of a large page.
    """
    key = snake(info.field_name)
    if key in source:
        return source[key]
    return _item(ctx(info).tenants.load(source["tenant_id"]), key)


async def _item(awaitable, key: str) -> Any:
    return (await awaitable)[key]


async def tenant_statistics(source: dict, info: GraphQLResolveInfo) -> dict:
    return await resources_body(ctx(info), source["tenant_id"])


async def resources_body(context: Context, tenant_id: str) -> dict:
    """REST /resources; its current_usage gains last_updated from the same usage sample source."""
    body = await context.services.tenants.resources(context.caller(), tenant_id)
    full = await context.tenants.load(tenant_id)
    return {**body, "current_usage": {"last_updated": full["usage"]["last_updated"], **body["current_usage"]}}


# ---------------------------------------------------------------- queries


async def q_tenants(_root, info: GraphQLResolveInfo, **args) -> dict:
    context = ctx(info)
    filters = {"tier": lower(args.get("tier")), "state": lower(args.get("state"))}
    window = window_of(args, context.codec, "tenants", filters)

    async def fetch(page: int, size: int) -> dict:
        return await context.services.tenants.list(context.caller(), page=page, page_size=size, **filters)

    rows, total = await _slice(fetch, "tenants", window)
    return connection(rows, total, window, context.codec, "tenants", filters)


async def _slice(fetch, key: str, window) -> tuple[list, int]:
    """Rows [offset, offset+limit) from a page/page_size list: one call, two when unaligned."""
    if window.limit <= 0:
        first = await fetch(1, 1)
        return [], first["total"]
    page, skip = divmod(window.offset, window.limit)
    body = await fetch(page + 1, window.limit)
    rows = body[key][skip:]
    if skip and len(body[key]) == window.limit:
        rows += (await fetch(page + 2, window.limit))[key][: skip]
    return rows[: window.limit], body["total"]


async def q_tenant(_root, info: GraphQLResolveInfo, id: str) -> dict | None:
    return await _nullable(ctx(info).tenants.load(id), "TENANT_NOT_FOUND")


async def q_tenant_by_name(_root, info: GraphQLResolveInfo, name: str) -> dict | None:
    context = ctx(info)
    return await _nullable(context.services.tenants.get_by_name(context.caller(), name), "TENANT_NOT_FOUND")


async def _nullable(awaitable, not_found_code: str):
    """Spec's nullable lookups: a missing object is null, other refusals stay errors."""
    try:
        return await awaitable
    except ServiceError as exc:
        if exc.code == not_found_code:
            return None
        raise


async def q_pdbs(_root, info: GraphQLResolveInfo, **args) -> dict:
    context = ctx(info)
    filters = {"state": lower(args.get("state"))}
    window = window_of(args, context.codec, "pdbs", filters)
    method = service_method(context.services, "pdbs", "list", "listing PDBs")

    async def fetch(page: int, size: int) -> dict:
        state = SHOWN_AS_MOUNTED if filters["state"] == "mounted" else filters["state"]
        return await method(context.caller(), page=page, page_size=size, state=state)

    rows, total = await _slice(fetch, "pdbs", window)
    return connection(rows, total, window, context.codec, "pdbs", filters)


async def q_pdb(_root, info: GraphQLResolveInfo, id: str) -> dict | None:
    context = ctx(info)
    method = service_method(context.services, "pdbs", "get", "reading a PDB")
    return await _nullable(method(context.caller(), id), "PDB_NOT_FOUND")


async def q_pdb_by_name(_root, info: GraphQLResolveInfo, name: str) -> dict | None:
    context = ctx(info)
    method = service_method(context.services, "pdbs", "get_by_name", "reading a PDB by name")
    return await _nullable(method(context.caller(), name), "PDB_NOT_FOUND")


async def q_cdb(_root, info: GraphQLResolveInfo) -> dict:
    context = ctx(info)
    return await context.services.cdb.status(context.caller())


async def shared_list(source: dict, info: GraphQLResolveInfo) -> list:
    """Common users / lockdown profiles: the service's list, or [] where no service keeps any yet."""
    context = ctx(info)
    method = getattr(getattr(context.services, "lifecycle", None), f"list_{snake(info.field_name)}", None)
    if method is None:
        return []  # nothing can have been created without the service: empty is the truth
    return (await method(context.caller()))[snake(info.field_name)]


async def q_cdb_statistics(_root, info: GraphQLResolveInfo) -> dict:
    context = ctx(info)
    caller = context.caller()
    status = await context.services.cdb.status(caller)  # cdb:admin, as REST's /cdb/status
    tenants = context.services.tenants

    async def count(**filters) -> int:
        return (await tenants.list(caller, page=1, page_size=1, **filters))["total"]

    by_state = [{"state": state, "count": await count(state=state.lower())} for state in STATES]
    by_tier = [{"tier": tier, "count": await count(tier=tier.lower())} for tier in TIERS]
    return {
        "cdb_name": status["cdb_name"], "total_tenants": await count(),
        "tenants_by_state": by_state, "tenants_by_tier": by_tier,
        "total_pdbs": status["total_pdbs"], "open_pdbs": status["open_pdbs"], "max_pdbs": status["max_pdbs"],
        "uptime_seconds": status["uptime_seconds"],
    }


STATES = ("ACTIVE", "SUSPENDED", "MAINTENANCE", "MIGRATING", "TERMINATED")
TIERS = ("BRONZE", "SILVER", "GOLD", "PLATINUM")


async def q_tenant_resources(_root, info: GraphQLResolveInfo, tenantId: str) -> dict:
    return (await resources_body(ctx(info), tenantId))["current_usage"]


ISOLATION_TYPENAMES = {
    "MEMORY": "MemoryIsolationStats", "CPU": "CpuIsolationStats", "IO": "IoIsolationStats",
    "NETWORK": "NetworkIsolationStats", "BUFFER_POOL": "BufferPoolIsolationStats",
}


async def q_isolation_stats(_root, info: GraphQLResolveInfo, tenantId: str, type: str) -> dict:
    context = ctx(info)
    kind = type.lower()
    method = service_method(context.services, "tenants", f"isolation_{kind}", f"{kind} isolation statistics")
    return {**await method(context.caller(), tenantId), "__typename": ISOLATION_TYPENAMES[type]}


async def q_tenant_sla(_root, info: GraphQLResolveInfo, tenantId: str) -> dict:
    context = ctx(info)
    authz.require(context.caller(), "sla:read", tenantId)
    return (await context.tenants.load(tenantId))["sla"]


async def q_metering_records(_root, info: GraphQLResolveInfo, tenantId: str, startDate, endDate) -> list:
    context = ctx(info)
    if endDate <= startDate:
        raise ServiceError("INVALID_REQUEST", "endDate must be after startDate", field="endDate")
    method = getattr(getattr(context.services, "metering", None), "records", None)
    if method is None:
        # No sampler writes metering records in this build: check access, then the truth is "none".
        authz.require(context.caller(), "resources:read", tenantId)
        await context.tenants.load(tenantId)  # TENANT_NOT_FOUND for an unknown tenant
        return []
    return (await method(context.caller(), tenantId, start=startDate, end=endDate))["records"]


async def q_tenant_billing(_root, info: GraphQLResolveInfo, tenantId: str, period: str) -> dict:
    context = ctx(info)
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise ServiceError("INVALID_REQUEST", "period must be YYYY-MM", field="period")
    method = service_method(context.services, "metering", "billing", "billing")
    return await method(context.caller(), tenantId, period=period)


# ---------------------------------------------------------------- mutations


def _as_error(typename: str, exc: ServiceError) -> dict:
    details = exc.to_dict()["details"]
    return {"__typename": typename, "message": exc.message, "code": exc.code,
            "details": json.dumps(details, sort_keys=True) if details is not None else None}


def returns_union(success: str, failure: str):
    """Turn a mutation's ServiceError into the spec's error member of its union."""
    def wrap(function):
        @functools.wraps(function)
        async def resolver(root, info, **args):
            try:
                value = await function(root, info, **args)
            except ServiceError as exc:
                if exc.code in AUTH_CODES:
                    raise
                return _as_error(failure, exc)
            return {**value, "__typename": success}
        return resolver
    return wrap


async def _tenant_after(context: Context, tenant_id: str) -> dict:
    context.tenants.forget(tenant_id)
    return {"tenant_id": tenant_id}  # fields load lazily, after the change


@returns_union("Tenant", "TenantError")
async def m_create_tenant(_root, info, input: dict) -> dict:
    context = ctx(info)
    tags = input.get("tags")
    if tags is not None:
        keys = [tag["key"] for tag in tags]
        if len(set(keys)) != len(keys):
            raise ServiceError("INVALID_REQUEST", "tags: a key appears twice", field="tags")
        tags = {tag["key"]: tag["value"] for tag in tags}
    body = await context.services.tenants.create(
        context.caller(), tenant_name=input["tenantName"], admin_user=input["adminUser"],
        admin_password=input["adminPassword"], service_tier=lower(input["serviceTier"]),
        organization=input.get("organization"), tags=tags)
    return await _tenant_after(context, body["tenant_id"])


async def _tenant_op(info, operation: str, tenant_id: str, *args) -> dict:
    """services.tenants.<operation>(caller, tenant_id, *args), then the tenant as it is now."""
    context = ctx(info)
    await getattr(context.services.tenants, operation)(context.caller(), tenant_id, *args)
    return await _tenant_after(context, tenant_id)


@returns_union("Tenant", "TenantError")
async def m_suspend_tenant(_root, info, tenantId: str, reason: str) -> dict:
    return await _tenant_op(info, "suspend", tenantId, reason)


@returns_union("Tenant", "TenantError")
async def m_resume_tenant(_root, info, tenantId: str) -> dict:
    return await _tenant_op(info, "resume", tenantId)


@returns_union("Tenant", "TenantError")
async def m_upgrade_tier(_root, info, tenantId: str, newTier: str) -> dict:
    return await _tenant_op(info, "change_tier", tenantId, lower(newTier), "immediate")


@returns_union("Tenant", "TenantError")
async def m_update_priority(_root, info, tenantId: str, priority: str) -> dict:
    return await _tenant_op(info, "set_priority", tenantId, lower(priority))


@returns_union("Tenant", "TenantError")
async def m_update_quota(_root, info, tenantId: str, quota: dict) -> dict:
    changes = {snake(name): value for name, value in quota.items() if value is not None}
    return await _tenant_op(info, "update_quota", tenantId, changes)


@returns_union("Tenant", "TenantError")
async def m_terminate_tenant(_root, info, tenantId: str) -> dict:
    return await _tenant_op(info, "terminate", tenantId)


LIFECYCLE_OPS = ("clone", "unplug", "plug", "apply_lockdown_profile")  # services.lifecycle (rustymt.service.lifecycle)


async def _pdb_call(info, name: str, what: str, *args, **kwargs) -> dict:
    context = ctx(info)
    method = service_method(context.services, "lifecycle" if name in LIFECYCLE_OPS else "pdbs", name, what)
    return await method(context.caller(), *args, **kwargs)


async def _pdb_op(info, name: str, what: str, *args, **kwargs) -> dict:
    """Run a PDB operation, answer the PDB as GET /pdbs/{id} shows it afterwards."""
    body = await _pdb_call(info, name, what, *args, **kwargs)
    return await _pdb_call(info, "get", "reading a PDB", body["pdb_id"])


@returns_union("PDB", "PdbError")
async def m_create_pdb(_root, info, input: dict) -> dict:
    return await _pdb_op(info, "create", "creating PDBs", pdb_name=input["pdbName"], admin_user=input["adminUser"],
                         admin_password=input["adminPassword"], tenant_id=input.get("tenantId"),
                         clone_from_seed=input["cloneFromSeed"])


@returns_union("PDB", "PdbError")
async def m_open_pdb(_root, info, pdbId: str, mode: str) -> dict:
    return await _pdb_op(info, "open", "opening PDBs", pdbId, mode=mode)


@returns_union("PDB", "PdbError")
async def m_close_pdb(_root, info, pdbId: str, closeMode: str) -> dict:
    return await _pdb_op(info, "close", "closing PDBs", pdbId, mode=lower(closeMode))


@returns_union("CloneJob", "PdbError")
async def m_clone_pdb(_root, info, input: dict) -> dict:
    return await _pdb_call(info, "clone", "cloning PDBs", input["sourcePdbId"], target_name=input["targetName"],
                           clone_type=lower(input["cloneType"]), open_after_clone=input["openAfterClone"])


@returns_union("PDB", "PdbError")
async def m_unplug_pdb(_root, info, input: dict) -> dict:
    return await _pdb_op(info, "unplug", "unplugging PDBs", input["pdbId"], xml_path=input["xmlPath"],
                         keep_datafiles=input["keepDatafiles"])


@returns_union("PDB", "PdbError")
async def m_plug_pdb(_root, info, input: dict) -> dict:
    return await _pdb_op(info, "plug", "plugging PDBs", xml_path=input["xmlPath"], pdb_name=input["pdbName"],
                         copy_datafiles=input["copyDatafiles"], target_path=input.get("targetPath"))


@returns_union("PDB", "PdbError")
async def m_drop_pdb(_root, info, pdbId: str, keepDatafiles: bool) -> dict:
    return await _pdb_op(info, "drop", "dropping PDBs", pdbId, keep_datafiles=keepDatafiles)


@returns_union("PDB", "PdbError")
async def m_apply_lockdown_profile(_root, info, pdbId: str, profileName: str) -> dict:
    return await _pdb_op(info, "apply_lockdown_profile", "lockdown profiles", pdbId, profile_name=profileName)


@returns_union("CommonUser", "PdbError")
async def m_create_common_user(_root, info, input: dict) -> dict:
    context = ctx(info)
    method = service_method(context.services, "lifecycle", "create_common_user", "common users")
    return await method(context.caller(), username=input["username"], password=input["password"], pdbs=input.get("pdbs"))


@returns_union("LockdownProfile", "PdbError")
async def m_create_lockdown_profile(_root, info, input: dict) -> dict:
    context = ctx(info)
    method = service_method(context.services, "lifecycle", "create_lockdown_profile", "lockdown profiles")
    return await method(context.caller(), name=input["name"], disabled_statements=input.get("disabledStatements") or [],
                        disabled_features=input.get("disabledFeatures") or [])


QUERY = {
    "tenants": q_tenants, "tenant": q_tenant, "tenantByName": q_tenant_by_name,
    "pdbs": q_pdbs, "pdb": q_pdb, "pdbByName": q_pdb_by_name,
    "cdb": q_cdb, "cdbStatistics": q_cdb_statistics,
    "tenantResources": q_tenant_resources, "isolationStats": q_isolation_stats,
    "tenantSla": q_tenant_sla, "tenantMeteringRecords": q_metering_records, "tenantBilling": q_tenant_billing,
}

MUTATION = {
    "createTenant": m_create_tenant, "suspendTenant": m_suspend_tenant, "resumeTenant": m_resume_tenant,
    "upgradeTier": m_upgrade_tier, "updatePriority": m_update_priority, "updateQuota": m_update_quota,
    "terminateTenant": m_terminate_tenant,
    "createPdb": m_create_pdb, "openPdb": m_open_pdb, "closePdb": m_close_pdb, "clonePdb": m_clone_pdb,
    "unplugPdb": m_unplug_pdb, "plugPdb": m_plug_pdb, "dropPdb": m_drop_pdb,
    "createCommonUser": m_create_common_user, "createLockdownProfile": m_create_lockdown_profile,
    "applyLockdownProfile": m_apply_lockdown_profile,
}

# Object fields that need more than dict_field.
FIELDS = {
    ("Tenant", name): tenant_field
    for name in ("tenantId", "tenantName", "serviceTier", "state", "priority", "quota", "usage", "sla", "createdAt")
}
FIELDS[("Tenant", "statistics")] = tenant_statistics
FIELDS[("SharedServices", "commonUsers")] = shared_list
FIELDS[("SharedServices", "lockdownProfiles")] = shared_list
# The spec's PdbState has no UNPLUGGED: an unplugged PDB shows as MOUNTED (REST says "unplugged"); see SHOWN_AS_MOUNTED.
FIELDS[("PDB", "state")] = lambda source, info: "mounted" if source.get("state") in SHOWN_AS_MOUNTED else source.get("state")
