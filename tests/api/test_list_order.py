"""Lists are in creation order, also for rows created within one second
(created_at has whole seconds; ties must not fall to the random ids)."""
from __future__ import annotations


def test_tenants_and_pdbs_list_in_creation_order(api_daemon):
    names = [f"order_{letter}" for letter in "zyxwvutsrq"]  # reverse-alphabetical, ids random
    created = [api_daemon.create_tenant(name, tier="bronze") for name in names]
    # (ten creates back to back share seconds: with ties broken by the random
    # ids, the order below came out shuffled)
    listed = api_daemon.request("GET", "/api/v1/tenants?page_size=100").json["tenants"]
    assert [t["tenant_name"] for t in listed if t["tenant_name"].startswith("order_")] == names
    pdb_ids = [body["pdb_id"] for body in created]
    pdbs = api_daemon.request("GET", "/api/v1/pdbs?page_size=100").json["pdbs"]
    assert [p["pdb_id"] for p in pdbs if p["pdb_id"] in pdb_ids] == pdb_ids
