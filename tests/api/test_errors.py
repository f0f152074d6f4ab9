"""Every error code the tenant API can produce, reached through REST, in the one JSON shape.

Not reachable from these endpoints (by design): QUOTA_EXCEEDED and PDB_NOT_FOUND
(PDB operations and the engine), SLA_VIOLATION (a warning from SLA
monitoring), QUOTA_EXCEEDED for the API request rate (tests/api/test_ratelimit*.py), UNAVAILABLE and
INTERNAL_ERROR (must not be reachable at all; the fuzz test below checks no
5xx answers).
"""
from __future__ import annotations

import http.client
import json

import pytest

from rustymt.service.errors import HTTP_STATUS

UNKNOWN = "tenant_000000000000"


def assert_error(response, code, field=None):
    assert response.status == HTTP_STATUS[code], response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code and error["message"]
    if field is not None:
        assert error["details"]["field"] == field, error
        assert field in error["message"]


@pytest.fixture(scope="module")
def tenant(api_daemon):
    return api_daemon.create_tenant("errors_corp")


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/api/v1/tenants/{id}", None),
    ("DELETE", "/api/v1/tenants/{id}", None),
    ("POST", "/api/v1/tenants/{id}/suspend", {"reason": "x"}),
    ("POST", "/api/v1/tenants/{id}/resume", None),
    ("PUT", "/api/v1/tenants/{id}/tier", {"new_tier": "gold"}),
    ("PUT", "/api/v1/tenants/{id}/priority", {"priority": "low"}),
    ("PUT", "/api/v1/tenants/{id}/quota", {"iops": 10}),
    ("GET", "/api/v1/tenants/{id}/resources", None),
    ("GET", "/api/v1/isolation/memory?tenant={id}", None),
    ("GET", "/api/v1/isolation/cpu?tenant={id}", None),
])
def test_tenant_not_found(api_daemon, method, path, body):
    assert_error(api_daemon.request(method, path.format(id=UNKNOWN), json=body), "TENANT_NOT_FOUND")


def test_tenant_already_exists_case_insensitively(api_daemon, tenant):
    body = {"tenant_name": "Errors_Corp", "admin_user": "someone@else.example", "admin_password": "long enough", "service_tier": "bronze"}
    assert_error(api_daemon.request("POST", "/api/v1/tenants", json=body), "TENANT_ALREADY_EXISTS", field="tenant_name")


def test_admin_user_must_be_unique(api_daemon, tenant):
    body = {"tenant_name": "other_corp", "admin_user": "admin@errors_corp.example", "admin_password": "long enough", "service_tier": "bronze"}
    assert_error(api_daemon.request("POST", "/api/v1/tenants", json=body), "CONFLICT", field="admin_user")


def test_illegal_transitions_are_invalid_state(api_daemon):
    tid = api_daemon.create_tenant("state_corp")["tenant_id"]
    assert_error(api_daemon.request("POST", f"/api/v1/tenants/{tid}/resume"), "INVALID_STATE")
    assert api_daemon.request("POST", f"/api/v1/tenants/{tid}/suspend", json={"reason": "audit"}).status == 200
    assert_error(api_daemon.request("POST", f"/api/v1/tenants/{tid}/suspend", json={"reason": "again"}), "INVALID_STATE")
    assert api_daemon.request("DELETE", f"/api/v1/tenants/{tid}").status == 200
    for method, path, body in [("DELETE", "", None), ("POST", "/resume", None), ("POST", "/suspend", {"reason": "x"}),
                               ("PUT", "/tier", {"new_tier": "gold"}), ("PUT", "/priority", {"priority": "low"}),
                               ("PUT", "/quota", {"iops": 5})]:
        response = api_daemon.request(method, f"/api/v1/tenants/{tid}{path}", json=body)
        assert_error(response, "INVALID_STATE")
        assert response.json["error"]["details"]["current_state"] == "terminated"


def test_cpu_guarantees_beyond_the_host_are_insufficient_resources(api_daemon, tenant):
    response = api_daemon.request("PUT", f"/api/v1/tenants/{tenant['tenant_id']}/quota", json={"cpu_percent": 100000})
    assert_error(response, "INSUFFICIENT_RESOURCES")
    assert response.json["error"]["details"]["resource"] == "cpu"
    # Nothing changed.
    assert api_daemon.request("GET", f"/api/v1/tenants/{tenant['tenant_id']}").json["quota"]["cpu_percent"] == 200


def test_port_range_exhausted_then_freed_by_terminate(daemon_factory):
    daemon = daemon_factory(env={"RUSTYMT_TENANT_PORTS": "31000-31001"})  # the contract's env alias
    ports = {daemon.create_tenant(f"p{i}")["resources"]["network_port"] for i in range(2)}
    assert ports == {31000, 31001}
    body = {"tenant_name": "p2", "admin_user": "p2@x", "admin_password": "long enough", "service_tier": "bronze"}
    response = daemon.request("POST", "/api/v1/tenants", json=body)
    assert_error(response, "INSUFFICIENT_RESOURCES")
    assert response.json["error"]["details"]["resource"] == "network_port"
    first = daemon.request("GET", "/api/v1/tenants?page_size=1").json["tenants"][0]
    assert daemon.request("DELETE", f"/api/v1/tenants/{first['tenant_id']}").status == 200
    again = daemon.request("POST", "/api/v1/tenants", json=body)
    assert again.status == 201, again.text
    assert again.json["resources"]["network_port"] in ports


def test_max_pdbs_is_insufficient_resources(daemon_factory):
    daemon = daemon_factory(env={"RUSTYMT_CDB_MAX_PDBS": "1"})
    daemon.create_tenant("only_one")
    body = {"tenant_name": "one_too_many", "admin_user": "x@y", "admin_password": "long enough", "service_tier": "bronze"}
    response = daemon.request("POST", "/api/v1/tenants", json=body)
    assert_error(response, "INSUFFICIENT_RESOURCES")
    assert response.json["error"]["details"] == {"resource": "pdbs", "max_pdbs": 1}


GOOD = {"tenant_name": "valid_name", "admin_user": "v@x", "admin_password": "long enough", "service_tier": "gold"}


@pytest.mark.parametrize("body,field", [
    ({**GOOD, "service_tier": "diamond"}, "service_tier"),
    ({**GOOD, "service_tier": 3}, "service_tier"),
    ({**GOOD, "tenant_name": 12}, "tenant_name"),
    ({**GOOD, "tenant_name": "has space"}, "tenant_name"),
    ({**GOOD, "tenant_name": "x" * 64}, "tenant_name"),
    ({**GOOD, "admin_password": "short"}, "admin_password"),
    ({**GOOD, "tags": {"a": 1}}, "tags.a"),
    ({**GOOD, "tags": ["a"]}, "tags"),
    ({**GOOD, "surprise": True}, "surprise"),
    ({k: v for k, v in GOOD.items() if k != "admin_user"}, "admin_user"),
    ([GOOD], "body"),
])
def test_invalid_create_bodies_name_the_field(api_daemon, body, field):
    assert_error(api_daemon.request("POST", "/api/v1/tenants", json=body), "INVALID_REQUEST", field=field)


@pytest.mark.parametrize("path,body,field", [
    ("/tier", {"new_tier": "gold", "effective_date": "next tuesday"}, "effective_date"),
    ("/tier", {"new_tier": "gold", "effective_date": "2030-01-01T00:00:00"}, "effective_date"),
    ("/tier", {"new_tier": "silver"}, "new_tier"),  # already silver
    ("/tier", {}, "new_tier"),
    ("/quota", {"cpu_percent": 0}, "cpu_percent"),
    ("/quota", {"memory_mb": 1.5}, "memory_mb"),
    ("/quota", {"iops": True}, "iops"),
    ("/quota", {"network_mbps": "fast"}, "network_mbps"),
    ("/quota", {}, "quota"),
    ("/quota", {"disk": 1}, "disk"),
    ("/priority", {"priority": "urgent"}, "priority"),
    ("/suspend", {}, "reason"),
    ("/suspend", {"reason": "x", "notify_admin": "yes"}, "notify_admin"),
    ("/resume", {"force": True}, "force"),
])
def test_invalid_update_bodies_name_the_field(api_daemon, tenant, path, body, field):
    method = "POST" if path in ("/suspend", "/resume") else "PUT"
    response = api_daemon.request(method, f"/api/v1/tenants/{tenant['tenant_id']}{path}", json=body)
    assert_error(response, "INVALID_REQUEST", field=field)


@pytest.mark.parametrize("query,field", [
    ("page=0", "page"), ("page=abc", "page"), ("page_size=101", "page_size"), ("tier=wood", "tier"),
    ("state=asleep", "state"), ("colour=red", "colour"), ("page=1&page=2", "page"),
])
def test_invalid_list_queries_name_the_parameter(api_daemon, query, field):
    assert_error(api_daemon.request("GET", f"/api/v1/tenants?{query}"), "INVALID_REQUEST", field=field)


def test_isolation_needs_the_tenant_parameter(api_daemon):
    assert_error(api_daemon.request("GET", "/api/v1/isolation/memory"), "INVALID_REQUEST", field="tenant")


@pytest.mark.parametrize("raw", [b"{", b"not json", b"\xff\xfe", b'{"tenant_name": NaN}', b"[1, 2", b"[" * 200000,
                                 b'{"a":' * 100000])
def test_malformed_json_is_invalid_request(api_daemon, raw):
    response = api_daemon.request("POST", "/api/v1/tenants", body=raw, headers={"Content-Type": "application/json"})
    assert_error(response, "INVALID_REQUEST", field="body")


def test_body_over_the_limit_is_413(api_daemon):
    big = json.dumps({**GOOD, "organization": "x" * (2 << 20)}).encode()
    assert_error(api_daemon.request("POST", "/api/v1/tenants", body=big), "PAYLOAD_TOO_LARGE")


def test_chunked_body_over_the_limit_is_413(api_daemon):
    connection = http.client.HTTPConnection(api_daemon.host, api_daemon.port, timeout=30)
    try:
        chunks = (b"x" * 65536 for _ in range(40))  # 2.5 MiB, no Content-Length
        connection.request("POST", "/api/v1/tenants", body=chunks, encode_chunked=True,
                           headers={"Authorization": f"Bearer {api_daemon.admin_token}", "Content-Type": "application/json"})
        answer = connection.getresponse()
        assert answer.status == 413
        assert json.loads(answer.read())["error"]["code"] == "PAYLOAD_TOO_LARGE"
    finally:
        connection.close()


def test_unknown_route_and_method(api_daemon):
    assert_error(api_daemon.request("GET", "/api/v1/nothing-here"), "NOT_FOUND")
    assert_error(api_daemon.request("GET", "/", token=None), "NOT_FOUND")
    response = api_daemon.request("PATCH", "/api/v1/tenants")
    assert_error(response, "METHOD_NOT_ALLOWED")
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_missing_token_permission_and_isolation(api_daemon, tenant):
    assert_error(api_daemon.request("GET", "/api/v1/tenants", token=None), "UNAUTHENTICATED")
    monitor = api_daemon.token("monitor")
    assert_error(api_daemon.request("POST", "/api/v1/tenants", json=GOOD, token=monitor), "PERMISSION_DENIED")
    other = api_daemon.create_tenant("neighbour_corp")["tenant_id"]
    scoped = api_daemon.token("tenant_admin", tenant_id=tenant["tenant_id"])
    assert api_daemon.request("GET", f"/api/v1/tenants/{tenant['tenant_id']}", token=scoped).status == 200
    assert_error(api_daemon.request("GET", f"/api/v1/tenants/{other}", token=scoped), "ISOLATION_VIOLATION")
    # A scoped token lists only its own tenant.
    listed = api_daemon.request("GET", "/api/v1/tenants", token=scoped).json
    assert [t["tenant_id"] for t in listed["tenants"]] == [tenant["tenant_id"]] and listed["total"] == 1


@pytest.mark.parametrize("raw", [b"null", b"0", b'"s"', b"{}", b'{"a": {"b": [1, {"c": null}]}}', b"\x00" * 10,
                                 b'{"new_tier": null, "effective_date": null}', b'{"priority": ["high"]}',
                                 b'{"reason": {"$gt": ""}}', b'{"cpu_percent": 1e400}', b'{"cpu_percent": 99999999999999999999999}'])
def test_no_body_makes_any_endpoint_fail_with_5xx(api_daemon, tenant, raw):
    tid = tenant["tenant_id"]
    for method, path in [("POST", "/api/v1/tenants"), ("POST", f"/api/v1/tenants/{tid}/suspend"),
                         ("POST", f"/api/v1/tenants/{tid}/resume"), ("PUT", f"/api/v1/tenants/{tid}/tier"),
                         ("PUT", f"/api/v1/tenants/{tid}/priority"), ("PUT", f"/api/v1/tenants/{tid}/quota")]:
        response = api_daemon.request(method, path, body=raw)
        assert response.status < 500, (method, path, response.text)
        assert response.error_code is not None or response.status == 200, response.text
        if response.status == 200 and path.endswith("/resume"):  # {} resumed it? only when suspended
            pytest.fail(f"resume of an active tenant answered 200: {response.text}")


def test_head_answers_every_get_route_with_its_headers_and_no_body(api_daemon, tenant):
    for path in (f"/api/v1/tenants/{tenant['tenant_id']}", "/api/v1/tenants", "/api/v1/cdb/status"):
        get = api_daemon.request("GET", path)
        head = api_daemon.request("HEAD", path)
        assert (head.status, head.text) == (get.status, ""), path
        assert head.headers["content-type"] == get.headers["content-type"] and "x-ratelimit-limit" in head.headers
    assert api_daemon.request("HEAD", "/api/v1/tenants", token=None).status == 401  # the same auth applies
