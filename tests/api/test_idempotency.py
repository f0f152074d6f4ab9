"""Idempotency-Key on the creating POSTs: a retry returns the first answer and does no work twice."""
from __future__ import annotations


def _tenant_body(name):
    return {"tenant_name": name, "admin_user": f"admin@{name}.example", "admin_password": "correct horse battery",
            "service_tier": "bronze"}


def test_retried_tenant_create_returns_the_first_answer_and_creates_one_tenant(api_daemon):
    key = {"Idempotency-Key": "create-idem-corp-1"}
    first = api_daemon.request("POST", "/api/v1/tenants", json=_tenant_body("idem_corp"), headers=key)
    again = api_daemon.request("POST", "/api/v1/tenants", json=_tenant_body("idem_corp"), headers=key)
    assert first.status == 201 and again.status == 201
    assert again.json == first.json
    assert again.headers.get("idempotent-replayed") == "true"
    listed = api_daemon.request("GET", "/api/v1/tenants?page_size=100").json["tenants"]
    assert [t["tenant_id"] for t in listed if t["tenant_name"] == "idem_corp"] == [first.json["tenant_id"]]
    # Without the key the same body is a second create, refused as a duplicate name.
    assert api_daemon.request("POST", "/api/v1/tenants", json=_tenant_body("idem_corp")).error_code == "TENANT_ALREADY_EXISTS"


def test_a_refusal_is_replayed_too_and_a_key_cannot_change_its_path(api_daemon):
    api_daemon.create_tenant("idem_taken", tier="bronze")
    key = {"Idempotency-Key": "create-taken-1"}
    first = api_daemon.request("POST", "/api/v1/tenants", json=_tenant_body("idem_taken"), headers=key)
    assert (first.status, first.error_code) == (409, "TENANT_ALREADY_EXISTS")
    again = api_daemon.request("POST", "/api/v1/tenants", json=_tenant_body("idem_taken"), headers=key)
    assert (again.status, again.json, again.headers.get("idempotent-replayed")) == (409, first.json, "true")
    other_path = api_daemon.request("POST", "/api/v1/pdbs", json={"pdb_name": "PDB_X", "admin_user": "a",
                                                                   "admin_password": "password1", "clone_from_seed": True},
                                    headers=key)
    assert (other_path.status, other_path.error_code) == (409, "CONFLICT")


def test_a_key_retried_with_another_body_is_refused_not_replayed(api_daemon):
    key = {"Idempotency-Key": "create-idem-body-1"}
    first = api_daemon.request("POST", "/api/v1/tenants", json=_tenant_body("idem_body_a"), headers=key)
    assert first.status == 201, first.text
    # the same request in another key order is the same request: replayed
    reordered = dict(reversed(list(_tenant_body("idem_body_a").items())))
    assert api_daemon.request("POST", "/api/v1/tenants", json=reordered, headers=key).headers.get("idempotent-replayed") == "true"
    other = api_daemon.request("POST", "/api/v1/tenants", json=_tenant_body("idem_body_b"), headers=key)
    assert (other.status, other.error_code) == (422, "IDEMPOTENCY_KEY_REUSED"), other.text
    listed = api_daemon.request("GET", "/api/v1/tenants?page_size=100").json["tenants"]
    assert "idem_body_b" not in [tenant["tenant_name"] for tenant in listed]  # nothing was created by the refused retry


def test_malformed_key_is_refused(api_daemon):
    response = api_daemon.request("POST", "/api/v1/tenants", json=_tenant_body("idem_long"),
                                  headers={"Idempotency-Key": "k" * 201})
    assert (response.status, response.error_code) == (400, "INVALID_REQUEST")
