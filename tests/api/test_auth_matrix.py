"""The auth matrix: every protected route x no token / wrong role / other tenant / right role.

Driven by the server's route table, so a route added later is covered here
without touching this file. All calls go to a real `rustymt serve`.

* no token      -> 401 UNAUTHENTICATED with a WWW-Authenticate challenge
* wrong role    -> 403 PERMISSION_DENIED (a role lacking the route's permission,
                   scoped to the very tenant it targets; where every role has
                   the permission, a token narrowed to lack it)
* other tenant  -> a token scoped to another tenant: 403 ISOLATION_VIOLATION
                   on routes naming a tenant, and never a byte of the victim's
                   id or name in any answer
* right role    -> authorized: 2xx, or a business refusal (INVALID_STATE)
Forbidden calls must not change anything: the victim tenant is compared
before and after the whole matrix.
"""
from __future__ import annotations

import pytest

from rustymt.service.authz import ROLE_PERMISSIONS
from tests.api.edge_support import (  # noqa: F401 - daemon is a fixture
    daemon,
    protected_routes, request_for, role_without, route_id, targets_tenant, tenant_role_with, token, unique_name,
)

ROUTES = protected_routes()


@pytest.fixture(scope="module")
def victim(daemon):
    created = daemon.create_tenant(unique_name("victim"))
    before = daemon.request("GET", f"/api/v1/tenants/{created['tenant_id']}").json
    return {"tenant_id": created["tenant_id"], "tenant_name": before["tenant_name"], "snapshot": before}


@pytest.fixture(scope="module")
def intruder(daemon):
    return daemon.create_tenant(unique_name("intruder"))["tenant_id"]


def test_route_table_has_protected_routes():
    # Guards the parametrization below against silently covering nothing.
    assert len(ROUTES) >= 10
    assert all(route.permission in set().union(*ROLE_PERMISSIONS.values()) for route in ROUTES)


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_no_token_is_401(daemon, victim, route):
    path, body = request_for(route, victim["tenant_id"])
    response = daemon.request(route.method, path, json=body, token=None)
    assert (response.status, response.error_code) == (401, "UNAUTHENTICATED"), response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_wrong_role_is_403_permission_denied(daemon, victim, route):
    tenant_id = victim["tenant_id"]
    role = role_without(route.permission)
    if role is not None:
        wrong = token(daemon, role, tenant_id)
    else:  # every role grants it: the same tenant's monitor, narrowed to lack exactly this permission
        wrong = token(daemon, "monitor", tenant_id, permissions=ROLE_PERMISSIONS["monitor"] - {route.permission})
    path, body = request_for(route, tenant_id)
    response = daemon.request(route.method, path, json=body, token=wrong)
    assert (response.status, response.error_code) == (403, "PERMISSION_DENIED"), response.text


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_other_tenant_is_refused_and_learns_nothing(daemon, victim, intruder, route):
    role = tenant_role_with(route.permission) or "tenant_admin"
    path, body = request_for(route, victim["tenant_id"])
    response = daemon.request(route.method, path, json=body, token=token(daemon, role, intruder))
    if targets_tenant(route):
        # scope is checked before the role: aiming at another tenant is a cross-tenant attempt
        assert (response.status, response.error_code) == (403, "ISOLATION_VIOLATION"), response.text
    else:
        assert response.status not in (401, 500), response.text
    assert victim["tenant_id"] not in response.text and victim["tenant_name"] not in response.text


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_right_role_is_authorized(daemon, route):
    created = daemon.create_tenant(unique_name("own"))
    tenant_id = created["tenant_id"]
    role = tenant_role_with(route.permission)
    headers = {}
    if role is None:
        right = daemon.admin_token  # operators only (cdb:admin, tenant:admin, resources:update)
    else:
        right = token(daemon, role, tenant_id)
        headers["X-Tenant-ID"] = tenant_id  # agreeing header is fine
    path, body = request_for(route, tenant_id, created["pdb_id"])  # PDB routes act on the tenant's own PDB
    try:
        response = daemon.request(route.method, path, json=body, token=right, headers=headers)
    finally:
        # Each live tenant holds a CPU guarantee: give it back, or later creates hit 507.
        daemon.request("DELETE", f"/api/v1/tenants/{tenant_id}")
    # Authorized: never an auth refusal, never a server error. The example body may still name
    # a job, profile or manifest that does not exist: the service's own 404/400 is fine here
    # (each route's success path is tested with real objects in its own module).
    assert response.status not in (401, 403) and response.status < 500, (response.status, response.text)


def test_forbidden_calls_changed_nothing(daemon, victim):
    after = daemon.request("GET", f"/api/v1/tenants/{victim['tenant_id']}").json
    assert after == victim["snapshot"]
