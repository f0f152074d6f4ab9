"""The served schema against the spec's SDL: every type, field, argument,
default, enum value, union member and nullability — no name drift possible.

Both the schema as built in-process and the schema a real daemon serves
(rebuilt from its introspection answer) are compared.
"""
from __future__ import annotations

from graphql import build_client_schema, build_schema, get_introspection_query, graphql_sync

from rustymt.api.graphql.schema import executable_schema, sdl
from tests.graphql.client import data_of, gql
from tests.graphql.spec_sdl import compare, referenced_type_names, spec_definitions

# Named by the spec but defined nowhere in it; the schema must define them.
SPEC_UNDEFINED = {
    "DateTime", "TenantStatistics", "CdbStatistics", "PdbConnection", "PdbEdge", "IsolationStats",
    "MeteringRecord", "BillingReport", "TablespaceStats", "CommonUser", "LockdownProfile",
    "ResourceQuotaInput", "CloseMode", "UnplugPdbInput", "PlugPdbInput", "CloneJobResult",
    "CommonUserInput", "CommonUserResult", "LockdownProfileInput", "LockdownProfileResult", "SystemAlert",
}


def test_spec_blocks_are_found_and_complete():
    definitions = spec_definitions()
    assert {"Query", "Mutation", "Subscription", "Tenant", "PDB", "CDB", "TenantResult", "PdbResult"} <= set(definitions)
    assert len(definitions) == 33  # as the spec stands: 33 definitions in 4 blocks
    undefined = referenced_type_names() - set(definitions) - {"ID", "String", "Int", "Float", "Boolean"}
    assert undefined | {"PdbEdge"} == SPEC_UNDEFINED  # PdbEdge: PdbConnection's edge, named by no spec line


def test_in_process_schema_matches_spec():
    assert compare(executable_schema()) == []


def test_served_schema_matches_spec(daemon):
    introspection = data_of(gql(daemon, get_introspection_query(descriptions=True), token=None))
    served = build_client_schema(introspection)
    assert compare(served) == []
    # and the types the spec only names are documented
    for name in SPEC_UNDEFINED:
        assert served.type_map[name].description, f"{name} has no description"


def test_comparison_catches_drift():
    """The checker itself: a renamed field, a changed nullability, a lost enum value are reported."""
    drifted = (sdl()
               .replace("  tenantName: String!\n  serviceTier", "  name: String!\n  serviceTier", 1)
               .replace("  openMode: OpenMode\n", "  openMode: OpenMode!\n", 1)
               .replace("  BEST_EFFORT\n", "", 1))
    problems = compare(build_schema(drifted))
    assert any("Tenant.tenantName missing" in p for p in problems), problems
    assert any("PDB.openMode" in p for p in problems), problems
    assert any("enum TenantPriority" in p for p in problems), problems


def test_introspection_needs_no_token_but_data_does(daemon):
    response = gql(daemon, "{ __schema { queryType { name } } cdb { cdbName } }", token=None)
    body = response.json
    assert response.status == 200
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    typename_only = graphql_sync(executable_schema(), "{ __typename }")
    assert typename_only.data == {"__typename": "Query"}
