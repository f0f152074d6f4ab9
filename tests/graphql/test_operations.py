"""Every query and mutation against a real daemon, cross-checked with REST."""
from __future__ import annotations

import pytest

from tests.graphql.client import data_of, error_codes, gql, unique

TENANT_FIELDS = """tenantId tenantName serviceTier state priority createdAt
  quota { cpuPercent memoryMb storageGb iops networkMbps maxConnections }
  usage { cpuPercent memoryMb storageGb currentIops networkMbps activeConnections lastUpdated }
  sla { uptimePercent avgResponseTimeMs p95ResponseTimeMs p99ResponseTimeMs errorRatePercent
        violations { violationType timestamp severity description remediation } }
  statistics { tenantId quota { cpuPercent } currentUsage { cpuPercent lastUpdated }
               utilization { cpu memory storage connections } }"""


@pytest.fixture(scope="module")
def tenants(daemon):
    created = [daemon.create_tenant(unique("ops"), tier=tier) for tier in ("bronze", "bronze", "gold")]
    return created


def test_tenant_matches_rest(daemon, tenants):
    tenant_id = tenants[2]["tenant_id"]
    node = data_of(gql(daemon, "query($id: ID!) { tenant(id: $id) { %s } }" % TENANT_FIELDS, {"id": tenant_id}))["tenant"]
    rest = daemon.request("GET", f"/api/v1/tenants/{tenant_id}").json
    assert node["tenantId"] == rest["tenant_id"] and node["tenantName"] == rest["tenant_name"]
    assert node["serviceTier"] == rest["service_tier"].upper() == "GOLD"
    assert node["state"] == "ACTIVE" and node["priority"] == rest["priority"].upper()
    assert node["quota"]["cpuPercent"] == rest["quota"]["cpu_percent"]
    assert node["quota"]["memoryMb"] == rest["quota"]["memory_mb"] == 8192
    assert node["usage"]["activeConnections"] == rest["usage"]["active_connections"]
    assert node["sla"]["uptimePercent"] == rest["sla"]["uptime_percent"]
    assert node["createdAt"].endswith("Z")
    resources = daemon.request("GET", f"/api/v1/tenants/{tenant_id}/resources").json
    assert node["statistics"]["utilization"] == resources["utilization"]
    by_name = data_of(gql(daemon, "query($n: String!) { tenantByName(name: $n) { tenantId } }",
                          {"n": tenants[2]["tenant_name"] if "tenant_name" in tenants[2] else rest["tenant_name"]}))
    assert by_name["tenantByName"]["tenantId"] == tenant_id


def test_missing_objects_are_null(daemon):
    data = data_of(gql(daemon, '{ tenant(id: "tenant_000000000000") { tenantId } tenantByName(name: "nobody") { tenantId } }'))
    assert data == {"tenant": None, "tenantByName": None}


def test_tenants_connection_pages_with_cursors(daemon, tenants):
    query = """query($after: String, $tier: ServiceTier) {
      tenants(pageSize: 1, after: $after, tier: $tier) {
        totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
        edges { cursor node { tenantId serviceTier } } } }"""
    seen, after = [], None
    while True:
        page = data_of(gql(daemon, query, {"after": after, "tier": "BRONZE"}))["tenants"]
        assert len(page["edges"]) <= 1
        seen += [edge["node"]["tenantId"] for edge in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] == (after is not None)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    rest = daemon.request("GET", "/api/v1/tenants?tier=bronze&page_size=100").json
    assert seen == [t["tenant_id"] for t in rest["tenants"]]
    assert page["totalCount"] == rest["total"] >= 2
    # page/pageSize give the same rows as REST
    second = data_of(gql(daemon, "{ tenants(page: 2, pageSize: 1, tier: BRONZE) { edges { node { tenantId } } } }"))
    assert second["tenants"]["edges"][0]["node"]["tenantId"] == rest["tenants"][1]["tenant_id"]
    # a cursor for other filters, or altered, is refused
    gold_cursor = data_of(gql(daemon, "{ tenants(pageSize: 1, tier: GOLD) { pageInfo { endCursor } } }"))["tenants"]["pageInfo"]["endCursor"]
    assert error_codes(gql(daemon, query, {"after": gold_cursor, "tier": "BRONZE"})) == ["INVALID_REQUEST"]
    assert error_codes(gql(daemon, query, {"after": gold_cursor[:-3] + "AAA", "tier": "GOLD"})) == ["INVALID_REQUEST"]
    assert error_codes(gql(daemon, "{ tenants(pageSize: 101) { totalCount } }")) == ["INVALID_REQUEST"]


def test_cdb_and_statistics(daemon, tenants):
    data = data_of(gql(daemon, """{ cdb { cdbName totalPdbs maxPdbs openPdbs seedPdb uptimeSeconds
        sharedServices { undoTablespace { sizeGb usedGb } tempTablespace { sizeGb usedGb }
                         commonUsers { username } lockdownProfiles { name } } }
      cdbStatistics { cdbName totalTenants totalPdbs maxPdbs tenantsByState { state count } tenantsByTier { tier count } } }"""))
    rest = daemon.request("GET", "/api/v1/cdb/status").json
    assert data["cdb"]["cdbName"] == rest["cdb_name"] and data["cdb"]["totalPdbs"] == rest["total_pdbs"]
    assert data["cdb"]["seedPdb"] == "PDB$SEED"
    assert data["cdb"]["sharedServices"]["commonUsers"] == []  # no service keeps common users yet
    stats = data["cdbStatistics"]
    total = daemon.request("GET", "/api/v1/tenants?page_size=1").json["total"]
    assert stats["totalTenants"] == total == sum(item["count"] for item in stats["tenantsByState"])
    assert sum(item["count"] for item in stats["tenantsByTier"]) == total
    assert {item["tier"] for item in stats["tenantsByTier"]} == {"BRONZE", "SILVER", "GOLD", "PLATINUM"}


def test_resources_isolation_sla_metering_billing(daemon, tenants):
    tenant_id = tenants[0]["tenant_id"]
    data = data_of(gql(daemon, """query($t: ID!) {
      tenantResources(tenantId: $t) { cpuPercent memoryMb currentIops activeConnections lastUpdated }
      memory: isolationStats(tenantId: $t, type: MEMORY) { __typename ... on MemoryIsolationStats { tenantId quotaBytes allocatedBytes } }
      cpu: isolationStats(tenantId: $t, type: CPU) { ... on CpuIsolationStats { shares minPercent maxPercent } }
      tenantSla(tenantId: $t) { uptimePercent violations { severity } }
      tenantMeteringRecords(tenantId: $t, startDate: "2026-11-20T00:00:00Z", endDate: "2026-12-20T00:00:00Z") { cpuSeconds }
    }""", {"t": tenant_id}))
    memory = daemon.request("GET", f"/api/v1/isolation/memory?tenant={tenant_id}").json
    cpu = daemon.request("GET", f"/api/v1/isolation/cpu?tenant={tenant_id}").json
    assert data["memory"] == {"__typename": "MemoryIsolationStats", "tenantId": tenant_id,
                              "quotaBytes": memory["quota_bytes"], "allocatedBytes": memory["allocated_bytes"]}
    assert data["cpu"] == {"shares": cpu["shares"], "minPercent": cpu["min_percent"], "maxPercent": cpu["max_percent"]}
    rest_records = daemon.request("GET", f"/api/v1/tenants/{tenant_id}/metering?start=2026-11-20&end=2026-12-20").json["records"]
    assert len(data["tenantMeteringRecords"]) <= len(rest_records)  # the sampler may add one between the two calls
    assert all(record["cpuSeconds"] >= 0 for record in data["tenantMeteringRecords"])
    assert data["tenantSla"]["violations"] == []
    io = data_of(gql(daemon, 'query($t: ID!) { isolationStats(tenantId: $t, type: IO) { __typename ... on IoIsolationStats { iopsLimit } } }',
                     {"t": tenant_id}))["isolationStats"]
    assert io == {"__typename": "IoIsolationStats",
                  "iopsLimit": daemon.request("GET", f"/api/v1/isolation/io?tenant={tenant_id}").json["iops_limit"]}
    billing = data_of(gql(daemon, 'query($t: ID!) { tenantBilling(tenantId: $t, period: "2026-10") { total currency } }',
                          {"t": tenant_id}))["tenantBilling"]
    rest_billing = daemon.request("GET", f"/api/v1/tenants/{tenant_id}/billing?period=2026-10").json
    assert billing == {"total": rest_billing["total"], "currency": rest_billing["currency"]}
    bad_period = gql(daemon, 'query($t: ID!) { tenantBilling(tenantId: $t, period: "2026-13") { total } }', {"t": tenant_id})
    assert error_codes(bad_period) == ["INVALID_REQUEST"]
    backwards = gql(daemon, 'query($t: ID!) { tenantMeteringRecords(tenantId: $t, startDate: "2027-01-01T00:00:00Z", endDate: "2026-01-01T00:00:00Z") { cpuSeconds } }', {"t": tenant_id})
    assert error_codes(backwards) == ["INVALID_REQUEST"]
    unknown = gql(daemon, '{ tenantSla(tenantId: "tenant_000000000000") { uptimePercent } }')
    assert error_codes(unknown) == ["TENANT_NOT_FOUND"]


RESULT = "__typename ... on Tenant { tenantId state serviceTier priority quota { memoryMb iops } } ... on TenantError { code message details }"


def mutate(daemon, field: str, args: str, variables: dict, token=...):
    kwargs = {} if token is ... else {"token": token}
    response = gql(daemon, "mutation(%s) { r: %s { %s } }" % (args, field, RESULT), variables, **kwargs)
    return data_of(response)["r"]


def test_tenant_mutations(daemon):
    name = unique("mut")
    created = mutate(daemon, "createTenant(input: $i)", "$i: CreateTenantInput!", {"i": {
        "tenantName": name, "adminUser": f"{name}@example.com", "adminPassword": "correct horse battery",
        "serviceTier": "BRONZE", "organization": "Example", "tags": [{"key": "env", "value": "test"}]}})
    assert created["__typename"] == "Tenant" and created["state"] == "ACTIVE"
    tenant_id = created["tenantId"]
    rest = daemon.request("GET", f"/api/v1/tenants/{tenant_id}").json
    assert rest["tenant_name"] == name
    duplicate = mutate(daemon, "createTenant(input: $i)", "$i: CreateTenantInput!", {"i": {
        "tenantName": name, "adminUser": "other@example.com", "adminPassword": "correct horse battery", "serviceTier": "BRONZE"}})
    assert duplicate["__typename"] == "TenantError" and duplicate["code"] == "TENANT_ALREADY_EXISTS"
    short = mutate(daemon, "createTenant(input: $i)", "$i: CreateTenantInput!", {"i": {
        "tenantName": unique("mut"), "adminUser": "x@example.com", "adminPassword": "short", "serviceTier": "BRONZE"}})
    assert short["code"] == "INVALID_REQUEST" and "admin_password" in short["details"]

    v = {"t": tenant_id}
    suspended = mutate(daemon, 'suspendTenant(tenantId: $t, reason: "audit")', "$t: ID!", v)
    assert suspended["state"] == "SUSPENDED"
    assert daemon.request("GET", f"/api/v1/tenants/{tenant_id}").json["state"] == "suspended"
    again = mutate(daemon, 'suspendTenant(tenantId: $t, reason: "audit")', "$t: ID!", v)
    assert again["code"] == "INVALID_STATE"
    assert mutate(daemon, "resumeTenant(tenantId: $t)", "$t: ID!", v)["state"] == "ACTIVE"
    upgraded = mutate(daemon, "upgradeTier(tenantId: $t, newTier: SILVER)", "$t: ID!", v)
    assert upgraded["serviceTier"] == "SILVER" and upgraded["quota"]["memoryMb"] == 4096
    assert mutate(daemon, "updatePriority(tenantId: $t, priority: BEST_EFFORT)", "$t: ID!", v)["priority"] == "BEST_EFFORT"
    assert daemon.request("GET", f"/api/v1/tenants/{tenant_id}").json["priority"] == "best_effort"
    quota = mutate(daemon, "updateQuota(tenantId: $t, quota: {iops: 1234})", "$t: ID!", v)
    assert quota["quota"]["iops"] == 1234 and quota["quota"]["memoryMb"] == 4096
    empty = mutate(daemon, "updateQuota(tenantId: $t, quota: {})", "$t: ID!", v)
    assert empty["code"] == "INVALID_REQUEST"
    assert mutate(daemon, "terminateTenant(tenantId: $t)", "$t: ID!", v)["state"] == "TERMINATED"
    gone = mutate(daemon, "resumeTenant(tenantId: $t)", "$t: ID!", v)
    assert gone["code"] == "INVALID_STATE"
    missing = mutate(daemon, "resumeTenant(tenantId: $t)", "$t: ID!", {"t": "tenant_000000000000"})
    assert missing["code"] == "TENANT_NOT_FOUND"


PDB_MUTATIONS = [
    ('clonePdb(input: {sourcePdbId: "pdb_x", targetName: "C", cloneType: SNAPSHOT, openAfterClone: true})', "PdbError", "PDB_NOT_FOUND"),
    ('unplugPdb(input: {pdbId: "pdb_x", xmlPath: "x.xml", keepDatafiles: true})', "PdbError", "PDB_NOT_FOUND"),
    ('plugPdb(input: {xmlPath: "x.xml", pdbName: "Q", copyDatafiles: true})', "PdbError", "INVALID_REQUEST"),
    ('createCommonUser(input: {username: "C##OPS", password: "password1"})', "CommonUser", None),
    ('createLockdownProfile(input: {name: "strict", disabledStatements: ["ATTACH"]})', "LockdownProfile", None),
    ('applyLockdownProfile(pdbId: "pdb_x", profileName: "strict")', "PdbError", "PDB_NOT_FOUND"),
]


@pytest.mark.parametrize("call, typename, code", PDB_MUTATIONS, ids=[c.split("(")[0] for c, _, _ in PDB_MUTATIONS])
def test_pdb_lifecycle_mutations_reach_the_service(daemon, call, typename, code):
    """Clone, plug/unplug, lockdown and common users run the lifecycle service: an unknown PDB is
    PDB_NOT_FOUND, a missing manifest INVALID_REQUEST (the spec's unions), creations return the object.
    Their effects are checked end to end in tests/lifecycle."""
    data = data_of(gql(daemon, "mutation { r: %s { __typename ... on PdbError { code message } } }" % call))
    assert data["r"]["__typename"] == typename
    if code is not None:
        assert data["r"]["code"] == code and data["r"]["message"]


PDB_FIELDS = "pdbId pdbName state openMode tenantId datafiles tablespaces createdAt"


def test_pdb_queries_match_rest(daemon, tenants):
    pdb_id = tenants[0]["pdb_id"]
    rest = daemon.request("GET", f"/api/v1/pdbs/{pdb_id}").json
    data = data_of(gql(daemon, 'query($p: ID!, $n: String!) { pdb(id: $p) { %s } byName: pdbByName(name: $n) { pdbId } '
                       'pdbs(pageSize: 100, state: OPEN) { totalCount edges { node { pdbId state } } } '
                       'none: pdb(id: "pdb_x") { pdbId } }' % PDB_FIELDS, {"p": pdb_id, "n": rest["pdb_name"]}))
    assert data["pdb"] == {"pdbId": pdb_id, "pdbName": rest["pdb_name"], "state": "OPEN", "openMode": "READ_WRITE",
                           "tenantId": rest["tenant_id"], "datafiles": rest["datafiles"], "tablespaces": rest["tablespaces"],
                           "createdAt": rest["created_at"]}
    assert data["byName"] == {"pdbId": pdb_id} and data["none"] is None
    assert data["pdbs"]["totalCount"] >= len(tenants) and {"pdbId": pdb_id, "state": "OPEN"} in [e["node"] for e in data["pdbs"]["edges"]]


def test_pdb_mutations_run_the_lifecycle(daemon, tenants):
    pdb_result = "__typename ... on PDB { pdbId state openMode } ... on PdbError { code }"
    created = data_of(gql(daemon, 'mutation($t: ID!) { r: createPdb(input: {pdbName: "PDB_GQL", adminUser: "a", '
                          'adminPassword: "password1", tenantId: $t, cloneFromSeed: true}) { %s } }' % pdb_result,
                          {"t": tenants[1]["tenant_id"]}))["r"]
    assert created["__typename"] == "PDB" and (created["state"], created["openMode"]) == ("MOUNTED", None)
    steps = [("openPdb(pdbId: $p, mode: READ_ONLY)", ("OPEN", "READ_ONLY")),
             ("closePdb(pdbId: $p, closeMode: IMMEDIATE)", ("CLOSED", None)),
             ("dropPdb(pdbId: $p, keepDatafiles: false)", ("DROPPED", None))]
    for call, expected in steps:
        answer = data_of(gql(daemon, "mutation($p: ID!) { r: %s { %s } }" % (call, pdb_result), {"p": created["pdbId"]}))["r"]
        assert (answer["state"], answer["openMode"]) == expected, answer
    again = data_of(gql(daemon, 'mutation($p: ID!) { r: openPdb(pdbId: $p, mode: READ_WRITE) { %s } }' % pdb_result,
                        {"p": created["pdbId"]}))["r"]
    assert again == {"__typename": "PdbError", "code": "INVALID_STATE"}
    missing = data_of(gql(daemon, 'mutation { r: closePdb(pdbId: "pdb_x", closeMode: NORMAL) { %s } }' % pdb_result))["r"]
    assert missing == {"__typename": "PdbError", "code": "PDB_NOT_FOUND"}


def test_get_runs_queries_not_mutations(daemon, tenants):
    import urllib.parse

    query = urllib.parse.quote('{ cdb { cdbName } }')
    response = daemon.request("GET", f"/graphql?query={query}")
    assert response.status == 200 and response.json["data"]["cdb"]["cdbName"]
    mutation = urllib.parse.quote('mutation { resumeTenant(tenantId: "x") { __typename } }')
    refused = daemon.request("GET", f"/graphql?query={mutation}")
    assert [e["extensions"]["code"] for e in refused.json["errors"]] == ["INVALID_REQUEST"]
    assert "POST" in refused.json["errors"][0]["message"]


def test_batch(daemon):
    response = daemon.request("POST", "/graphql", json=[{"query": "{ cdb { cdbName } }"}, {"query": "{ nope }"}])
    assert response.status == 200
    first, second = response.json
    assert first["data"]["cdb"]["cdbName"]
    assert second["errors"][0]["extensions"]["code"] == "INVALID_REQUEST"
    too_many = daemon.request("POST", "/graphql", json=[{"query": "{ __typename }"}] * 11)
    assert too_many.status == 400 and too_many.json["errors"][0]["extensions"]["code"] == "INVALID_REQUEST"


def test_quota_values_rest_accepts_fit_graphql_int(daemon):
    """GraphQL's Int is 32-bit: REST refuses more, so one tenant's quota can
    never make the listing of every tenant fail to serialize."""
    created = daemon.create_tenant(unique("bigq"))
    path = f"/api/v1/tenants/{created['tenant_id']}/quota"
    too_big = daemon.request("PUT", path, json={"iops": 2**31})
    assert (too_big.status, too_big.error_code) == (400, "INVALID_REQUEST"), too_big.text
    assert daemon.request("PUT", path, json={"iops": 2**31 - 1}).status == 200
    listed = data_of(gql(daemon, "{ tenants(first: 100) { edges { node { tenantId quota { iops } } } } }"))
    iops = {edge["node"]["tenantId"]: edge["node"]["quota"]["iops"] for edge in listed["tenants"]["edges"]}
    assert iops[created["tenant_id"]] == 2**31 - 1
    daemon.request("DELETE", f"/api/v1/tenants/{created['tenant_id']}")  # give its CPU guarantee back
