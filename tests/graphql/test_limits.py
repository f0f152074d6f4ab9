"""Protection against expensive or malformed requests, through a real daemon."""
from __future__ import annotations

import json

from tests.graphql.client import gql, unique

FULL_NODE = """tenantId tenantName serviceTier state priority createdAt
  quota { cpuPercent memoryMb storageGb iops networkMbps maxConnections }
  usage { cpuPercent memoryMb storageGb currentIops networkMbps activeConnections lastUpdated }
  sla { uptimePercent avgResponseTimeMs p95ResponseTimeMs p99ResponseTimeMs errorRatePercent
        violations { violationType timestamp severity description remediation } }"""


def only_error(response) -> dict:
    body = response.json
    assert body.get("data") is None, body
    assert len(body["errors"]) == 1, body
    error = body["errors"][0]
    assert "Traceback" not in json.dumps(body) and 'File "' not in json.dumps(body)
    return error


def test_cost_limit_rejects_aliased_pages(daemon):
    page = "tenants(pageSize: 100) { edges { node { %s } } }" % FULL_NODE
    malicious = "{ %s }" % " ".join(f"p{i}: {page}" for i in range(8))
    error = only_error(gql(daemon, malicious))
    assert error["extensions"]["code"] == "INVALID_REQUEST"
    assert error["message"].startswith("query cost") and "exceeds the limit of 20000" in error["message"]
    assert error["extensions"]["details"]["limit"] == "cost"
    # one such page is fine: the limit is not so tight it refuses normal use
    assert "errors" not in gql(daemon, "{ %s }" % page).json


def test_cost_counts_page_size_from_variables(daemon):
    page = "tenants(pageSize: $n) { edges { node { %s } } }" % FULL_NODE
    query = "query($n: Int) { a: %s b: %s c: %s }" % (page, page, page)
    assert "errors" not in gql(daemon, query, {"n": 5}).json
    assert only_error(gql(daemon, query, {"n": 100}))["extensions"]["details"]["limit"] == "cost"


def test_alias_limit(daemon):
    query = "{ %s }" % " ".join(f"c{i}: cdb {{ cdbName }}" for i in range(31))
    error = only_error(gql(daemon, query))
    assert error["extensions"]["details"]["limit"] == "aliases" and "30" in error["message"]


def test_deep_introspection_is_rejected(daemon):
    deep = "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }"
    error = only_error(gql(daemon, deep, token=None))
    assert error["extensions"]["code"] == "INVALID_REQUEST" and "introspection" in error["message"].lower()


def test_depth_limit(daemon_factory):
    strict = daemon_factory(env={"RUSTYMT_GRAPHQL_MAX_DEPTH": "4"})
    strict.create_tenant(unique("deep"), tier="bronze")
    error = only_error(gql(strict, "{ tenants { edges { node { sla { violations { severity } } } } } }"))
    assert error["extensions"]["details"] == {"limit": "depth", "value": 6, "max": 4}
    assert "errors" not in gql(strict, "{ tenants { edges { node { tenantId } } } }").json


def test_request_size_and_token_limits(daemon):
    huge = daemon.request("POST", "/graphql", json={"query": "{ cdb { cdbName } }" + " " * (70 << 10)})
    assert huge.status == 413 and huge.json["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    many_tokens = "{ " + "cdb { cdbName } " * 1300 + "}"
    error = only_error(gql(daemon, many_tokens))
    assert error["extensions"]["code"] == "INVALID_REQUEST" and "tokens" in error["message"]


def test_malformed_requests_are_4xx_not_5xx(daemon):
    for body in (b"{not json", b"[]", b'"just a string"', b'{"query": 42}', b'{"query": "{ cdb { cdbName } }", "variables": [1]}'):
        response = daemon.request("POST", "/graphql", body=body, headers={"Content-Type": "application/json"})
        assert response.status in (200, 400), (body, response.status, response.text)
        assert response.json["errors"][0]["extensions"]["code"] == "INVALID_REQUEST", body
    wrong_method = daemon.request("PUT", "/graphql", json={"query": "{ __typename }"})
    assert wrong_method.status == 405
    syntax = only_error(gql(daemon, "{ tenants("))
    assert syntax["extensions"]["code"] == "INVALID_REQUEST" and syntax["locations"]
