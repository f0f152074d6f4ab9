"""Subscription fields: event-bus streams, checked and subscribed eagerly.

Each `subscribe` resolver runs authz first (the same permissions and tenant
scope as the matching query), then subscribes to the bus before returning,
so no event published after the client's Subscribe message is processed can
be missed. A tenant-scoped caller's bus filter is its own tenant, so events
of other tenants never reach its queue. The bus drops a subscriber whose
queue fills (SubscriberDropped); the transport turns that into an error
message for the operation. tenantResourceUsage is the one periodic stream: a
fresh sample from the service every graphql.usage_interval_seconds.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from graphql import GraphQLResolveInfo

from rustymt.api.graphql.resolvers import ctx, resources_body, service_method
from rustymt.service import authz
from rustymt.service.errors import ServiceError


class EventStream:
    """Async iterator of converted bus events; `convert` returns None to skip, STOP to end after it."""

    def __init__(self, subscription, convert: Callable[[Any], Any], last: Callable[[Any], bool] = lambda event: False):
        self._subscription = subscription
        self._convert = convert
        self._last = last
        self._done = False

    def __aiter__(self) -> "EventStream":
        return self

    async def __anext__(self):
        while not self._done:
            event = await self._subscription.__anext__()
            value = self._convert(event)
            if value is None:
                continue
            if self._last(event):
                self._done = True
            return value
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._subscription.close()


def _subscribe(info: GraphQLResolveInfo, event_types: set[str] | None, tenant_id: str | None):
    context = ctx(info)
    return context.services.bus.subscribe(event_types, tenant_id=tenant_id, maxsize=context.settings.graphql.subscriber_queue)


def _scope(principal) -> str | None:
    """Bus filter: a tenant-scoped caller only ever receives its own tenant's events."""
    return principal.tenant_id


async def s_tenant_state_changed(_root, info: GraphQLResolveInfo, tenantId: str) -> EventStream:
    context = ctx(info)
    await context.tenants.load(tenantId)  # tenant:read + scope + TENANT_NOT_FOUND, as the query
    subscription = _subscribe(info, {"tenant.state.changed"}, tenantId)
    return EventStream(subscription, lambda event: {
        "tenant_id": event.tenant_id, "old_state": event.data["old_state"], "new_state": event.data["new_state"],
        "timestamp": event.timestamp, "reason": event.data.get("reason"),
    })


async def s_tenant_sla_violations(_root, info: GraphQLResolveInfo, tenantId: str) -> EventStream:
    context = ctx(info)
    authz.require(context.caller(), "sla:read", tenantId)
    await context.tenants.load(tenantId)
    subscription = _subscribe(info, {"tenant.sla.violated"}, tenantId)
    return EventStream(subscription, _violation)


def _violation(event) -> dict:
    data = event.data
    kind = data.get("violation_type", "unknown")
    measured = f"{kind} at {data.get('current_value')} against a target of {data.get('sla_target')}"
    return {
        "violation_type": kind,
        "timestamp": data.get("timestamp", event.timestamp),
        "severity": data.get("severity", "medium"),
        "description": data.get("description") or measured,
        "remediation": data.get("remediation") or "",
    }


async def s_pdb_state_changed(_root, info: GraphQLResolveInfo, pdbId: str) -> EventStream:
    context = ctx(info)
    caller = context.caller()
    authz.require(caller, "pdb:read")
    getter = getattr(getattr(context.services, "pdbs", None), "get", None)
    if getter is not None:
        await getter(caller, pdbId)  # PDB_NOT_FOUND / ISOLATION_VIOLATION before subscribing
    subscription = _subscribe(info, {"pdb.state.changed"}, _scope(caller))
    return EventStream(subscription, lambda event: {
        "pdb_id": pdbId, "old_state": event.data["old_state"], "new_state": event.data["new_state"],
        "timestamp": event.timestamp,
    } if event.data.get("pdb_id") == pdbId else None)


_JOB_FINISHED = ("completed", "failed", "cancelled")


async def s_clone_progress(_root, info: GraphQLResolveInfo, jobId: str):
    """The job's progress events until it finishes. The job is looked up as
    GET /api/v1/jobs/{id} does (NOT_FOUND for an unknown job or another
    tenant's); one that already finished answers its final state once and
    completes, so subscribing after a fast clone never waits forever."""
    context = ctx(info)
    caller = context.caller()
    authz.require(caller, "pdb:read")
    get_job = service_method(context.services, "lifecycle", "get_job", "following a clone job")
    # Subscribed before the job is read: a completion between the two is still delivered.
    subscription = _subscribe(info, {"clone.progress", "clone.completed"}, _scope(caller))
    try:
        job = await get_job(caller, jobId)
        if job["kind"] != "clone":
            raise ServiceError("INVALID_REQUEST", f"job {jobId} is a {job['kind']} job; cloneProgress follows clone jobs",
                               details={"job_id": jobId, "kind": job["kind"]})
    except BaseException:
        subscription.close()
        raise
    if job["status"] in _JOB_FINISHED:
        subscription.close()
        return _once({field: job[field] for field in ("job_id", "progress", "bytes_transferred",
                                                      "estimated_completion", "status")})

    def convert(event):
        data = event.data
        if data.get("job_id") != jobId:
            return None
        done = event.event_type == "clone.completed"
        return {
            "job_id": jobId,
            "progress": data.get("progress", 1.0 if done else 0.0),
            "bytes_transferred": data.get("bytes_transferred", 0),
            "estimated_completion": data.get("estimated_completion"),
            "status": data.get("status", "completed" if done else "in_progress"),
        }

    return EventStream(subscription, convert, last=lambda event: event.event_type == "clone.completed")


async def _once(value):
    yield value


async def s_system_alerts(_root, info: GraphQLResolveInfo) -> EventStream:
    caller = ctx(info).caller()
    authz.require(caller, "cdb:admin")
    subscription = _subscribe(info, {"system.alert"}, None)
    return EventStream(subscription, lambda event: {
        "alert_id": event.event_id,
        "severity": event.data.get("severity", "medium"),
        "source": event.data.get("source", "daemon"),
        "message": event.data.get("message") or event.data.get("alert") or "alert",
        "tenant_id": event.tenant_id,
        "timestamp": event.timestamp,
    })


async def s_tenant_resource_usage(_root, info: GraphQLResolveInfo, tenantId: str):
    context = ctx(info)
    first = (await resources_body(context, tenantId))["current_usage"]  # resources:read + scope, as the query
    interval = context.settings.graphql.usage_interval_seconds

    async def samples():
        yield first
        while True:
            await asyncio.sleep(interval)  # the sampling period itself, not synchronisation
            context.tenants.forget(tenantId)
            yield (await resources_body(context, tenantId))["current_usage"]

    return samples()


def event_value(value, _info, **_args):
    """Subscription fields resolve to the converted event itself."""
    return value


SUBSCRIPTION = {
    "tenantResourceUsage": s_tenant_resource_usage,
    "tenantSlaViolations": s_tenant_sla_violations,
    "tenantStateChanged": s_tenant_state_changed,
    "pdbStateChanged": s_pdb_state_changed,
    "cloneProgress": s_clone_progress,
    "systemAlerts": s_system_alerts,
}
