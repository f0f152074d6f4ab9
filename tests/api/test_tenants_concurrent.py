"""Concurrent API calls against one daemon: the catalog's transactions decide, exactly."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def test_fifty_concurrent_creates_of_one_name_make_one_tenant(api_daemon):
    body = {"tenant_name": "racey_corp", "admin_user": "admin@racey.example", "admin_password": "long enough", "service_tier": "bronze"}
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda _: api_daemon.request("POST", "/api/v1/tenants", json=body), range(50)))
    statuses = sorted(response.status for response in responses)
    assert statuses.count(201) == 1, [r.text for r in responses if r.status not in (201, 409)]
    assert statuses.count(409) == 49
    assert {r.error_code for r in responses if r.status == 409} == {"TENANT_ALREADY_EXISTS"}
    listed = api_daemon.request("GET", "/api/v1/tenants?page_size=100").json["tenants"]
    assert [t["tenant_name"] for t in listed].count("racey_corp") == 1


def test_concurrent_creates_of_different_names_get_distinct_ports(api_daemon):
    def create(index):
        body = {"tenant_name": f"crowd_{index}", "admin_user": f"admin{index}@crowd.example",
                "admin_password": "long enough", "service_tier": "bronze"}
        return api_daemon.request("POST", "/api/v1/tenants", json=body)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(create, range(20)))
    assert [r.status for r in responses] == [201] * 20, [r.text for r in responses if r.status != 201]
    ports = [r.json["resources"]["network_port"] for r in responses]
    assert len(set(ports)) == 20
    assert len({r.json["pdb_id"] for r in responses}) == 20
