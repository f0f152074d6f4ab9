"""Helpers for the edge tests (auth, rate limits, OpenAPI) against a real daemon.

The route table is the server's own (rustymt.api.app.collect_routes), so a
route added later is covered by the matrix tests without editing them. Tokens
are signed in-process with the daemon's key file through the same
issue_token that `rustymt token create` calls (spawning the CLI per token
would dominate the run time); one test goes through the CLI itself.
"""
from __future__ import annotations

import itertools
import re
import urllib.parse
from typing import Any

import pytest

import rustymt.config
from rustymt.api.app import collect_routes
from rustymt.api.auth import issue_token
from rustymt.api.routing import Route
from rustymt.service.authz import ROLE_PERMISSIONS
from tests.daemon import Daemon

PATH_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")
_unique = itertools.count(1)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, request):
    """One real daemon per test module (import this fixture into the module)."""
    running = Daemon.start(str(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]) / "data"))
    yield running
    running.stop()


def settings_for(env: dict[str, str] | None = None):
    """The settings a daemon started with `env` runs with (issuer, algorithms)."""
    return rustymt.config.load(env=env or {})


def token(daemon: Daemon, role: str, tenant_id: str | None = None, **more: Any) -> str:
    return issue_token(daemon.data_dir, settings_for(daemon.env), role, tenant_id, **more)


def protected_routes() -> list[Route]:
    return [route for route in collect_routes() if route.permission is not None]


def route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


def tenant_role_with(permission: str) -> str | None:
    """A tenant-scopable role granting `permission`, or None when only operators hold it."""
    return next((role for role, granted in ROLE_PERMISSIONS.items()
                 if role != "cdb_admin" and permission in granted), None)


def role_without(permission: str) -> str | None:
    """A tenant-scopable role lacking `permission`, or None when every role has it."""
    return next((role for role, granted in ROLE_PERMISSIONS.items()
                 if role != "cdb_admin" and permission not in granted), None)


def unique_name(prefix: str = "edge") -> str:
    return f"{prefix}_{next(_unique)}"


def example(schema: dict) -> Any:
    """A value valid for `schema` (the route-table subset): required fields only."""
    if "example" in schema:  # a route's own valid example (webhook registration)
        return schema["example"]
    kind = schema.get("type")
    kind = next(k for k in kind if k != "null") if isinstance(kind, list) else kind
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        properties = schema.get("properties", {})
        # Required fields; an all-optional body (a partial update) gets its first field.
        names = list(schema.get("required", ())) or list(properties)[:1]
        return {name: example(properties[name]) for name in names if name in properties}
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    # Letters, digits and underscores, unique: passes name patterns and password lengths.
    return unique_name("example_value")


def request_for(route: Route, tenant_id: str, pdb_id: str | None = None) -> tuple[str, Any]:
    """(path with query, JSON body) for calling `route` on `tenant_id`'s resources."""
    values = {"tenant_id": tenant_id, "pdb_id": pdb_id or "pdb_unknown"}
    path = PATH_PARAMETER.sub(lambda match: urllib.parse.quote(values.get(match.group(1), "x"), safe=""), route.path)
    if "tenant" in route.query:
        path += "?" + urllib.parse.urlencode({"tenant": tenant_id})
    body = example(route.request_schema) if route.request_schema is not None else None
    return path, body


def targets_tenant(route: Route) -> bool:
    return "{tenant_id}" in route.path or "tenant" in route.query
