"""Permissions and tenant scope: GraphQL gives exactly REST's answer for every
(operation x caller) pair — both run rustymt.service.authz through the same
service methods."""
from __future__ import annotations

import pytest

from tests.graphql.client import gql, unique

CALLERS = ("none", "monitor", "pdb_manager", "own_tenant_admin", "other_tenant_admin", "cdb_admin")


@pytest.fixture(scope="module")
def world(daemon):
    target = daemon.create_tenant(unique("authz"), tier="bronze")
    other = daemon.create_tenant(unique("authz"), tier="bronze")
    tokens = {
        "none": None,
        "monitor": daemon.token("monitor"),
        "pdb_manager": daemon.token("pdb_manager"),
        "own_tenant_admin": daemon.token("tenant_admin", tenant_id=target["tenant_id"]),
        "other_tenant_admin": daemon.token("tenant_admin", tenant_id=other["tenant_id"]),
        "cdb_admin": daemon.admin_token,
    }
    return target["tenant_id"], tokens


# name -> (REST method, path, body, GraphQL document, restore-after-success (REST, as admin) or None)
def operations(tenant_id: str) -> dict:
    tag = unique("m")
    return {
        "get": ("GET", f"/api/v1/tenants/{tenant_id}", None, 'query($t: ID!) { tenant(id: $t) { tenantId } }', None),
        "list": ("GET", "/api/v1/tenants", None, "{ tenants { totalCount } }", None),
        "resources": ("GET", f"/api/v1/tenants/{tenant_id}/resources", None,
                      'query($t: ID!) { tenantResources(tenantId: $t) { memoryMb } }', None),
        "isolation": ("GET", f"/api/v1/isolation/cpu?tenant={tenant_id}", None,
                      'query($t: ID!) { isolationStats(tenantId: $t, type: CPU) { __typename } }', None),
        "cdb": ("GET", "/api/v1/cdb/status", None, "{ cdb { cdbName } }", None),
        "suspend": ("POST", f"/api/v1/tenants/{tenant_id}/suspend", {"reason": "matrix"},
                    'mutation($t: ID!) { r: suspendTenant(tenantId: $t, reason: "matrix") { __typename ... on TenantError { code } } }',
                    ("POST", f"/api/v1/tenants/{tenant_id}/resume", {})),
        "quota": ("PUT", f"/api/v1/tenants/{tenant_id}/quota", {"iops": 777},
                  'mutation($t: ID!) { r: updateQuota(tenantId: $t, quota: {iops: 777}) { __typename ... on TenantError { code } } }', None),
        "priority": ("PUT", f"/api/v1/tenants/{tenant_id}/priority", {"priority": "low"},
                     'mutation($t: ID!) { r: updatePriority(tenantId: $t, priority: LOW) { __typename ... on TenantError { code } } }', None),
        "create": ("POST", "/api/v1/tenants", {"tenant_name": tag + "r", "admin_user": f"{tag}r@x.example",
                                              "admin_password": "correct horse battery", "service_tier": "bronze"},
                   'mutation { r: createTenant(input: {tenantName: "%sg", adminUser: "%sg@x.example", adminPassword: "correct horse battery", serviceTier: BRONZE}) { __typename ... on TenantError { code } } }' % (tag, tag),
                   None),
    }


def rest_outcome(response) -> str:
    return "OK" if response.status < 300 else response.json["error"]["code"]


def graphql_outcome(response) -> str:
    body = response.json
    if body.get("errors"):
        return body["errors"][0]["extensions"]["code"]
    result = body["data"].get("r")
    if isinstance(result, dict) and result.get("code"):
        return result["code"]
    return "OK"


@pytest.mark.parametrize("operation", ["get", "list", "resources", "isolation", "cdb", "suspend", "quota", "priority", "create"])
def test_graphql_answers_as_rest(daemon, world, operation):
    tenant_id, tokens = world
    method, path, body, document, restore = operations(tenant_id)[operation]
    outcomes = {}
    for caller in CALLERS:
        token = tokens[caller]
        rest = rest_outcome(daemon.request(method, path, json=body, token=token))
        if rest == "OK" and restore:
            daemon.request(*restore[:2], json=restore[2])
        graphql = graphql_outcome(gql(daemon, document, {"t": tenant_id} if "$t" in document else None, token=token))
        if graphql == "OK" and restore:
            daemon.request(*restore[:2], json=restore[2])
        outcomes[caller] = (rest, graphql)
    assert all(rest == graphql for rest, graphql in outcomes.values()), outcomes
    # the matrix is not trivial: someone is refused and someone is let through
    assert outcomes["none"][0] == "UNAUTHENTICATED"
    assert "OK" in {rest for rest, _ in outcomes.values()}


def test_scoped_lists_show_only_own_tenant(daemon, world):
    tenant_id, tokens = world
    response = gql(daemon, "{ tenants(pageSize: 100) { totalCount edges { node { tenantId } } } }", token=tokens["own_tenant_admin"])
    data = response.json["data"]
    # tenant callers draw on REST's per-tier rate-limit bucket (bronze: 1000/h)
    assert response.headers["x-ratelimit-limit"] == "1000" and int(response.headers["x-ratelimit-remaining"]) >= 0
    assert "x-ratelimit-limit" not in gql(daemon, "{ cdb { cdbName } }").headers  # operators are not tenant-limited
    assert data["tenants"]["totalCount"] == 1
    assert [edge["node"]["tenantId"] for edge in data["tenants"]["edges"]] == [tenant_id]


def test_x_tenant_id_must_agree(daemon, world):
    tenant_id, tokens = world
    response = gql(daemon, "{ tenants { totalCount } }", token=tokens["own_tenant_admin"], headers={"X-Tenant-ID": "tenant_000000000000"})
    assert response.status == 403
    assert response.json["errors"][0]["extensions"]["code"] == "ISOLATION_VIOLATION"


def test_bad_token_is_401(daemon):
    response = gql(daemon, "{ cdb { cdbName } }", token="not-a-jwt")
    assert response.status == 401
    assert response.json["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
