"""An unplugged PDB is a state of its own on REST (listable with
?state=unplugged, valid against the served OpenAPI schemas) and shows as
MOUNTED on GraphQL, whose spec enum has no UNPLUGGED — filtering on MOUNTED
finds it there."""
from __future__ import annotations

import jsonschema

from rustymt.api.rest.pdbs import LIST_RESPONSE, PDB_BODY
from tests.graphql.client import data_of, gql
from tests.lifecycle.test_lifecycle_api import Tenant, daemon  # noqa: F401 - the module's daemon fixture


def test_unplugged_pdb_is_listed_validated_and_mounted_on_graphql(daemon):  # noqa: F811
    owner = Tenant(daemon, "unplugstate")
    assert owner.call("POST", f"/api/v1/pdbs/{owner.pdb_id}/close", {"mode": "IMMEDIATE"}).status == 200
    unplugged = owner.call("POST", f"/api/v1/pdbs/{owner.pdb_id}/unplug", {"xml_path": "unplugstate.xml", "keep_datafiles": True})
    assert unplugged.status == 200 and unplugged.json["state"] == "unplugged", unplugged.text

    listed = owner.call("GET", "/api/v1/pdbs?state=unplugged&page_size=100")
    assert listed.status == 200, listed.text
    assert owner.pdb_id in [pdb["pdb_id"] for pdb in listed.json["pdbs"]]
    assert {pdb["state"] for pdb in listed.json["pdbs"]} == {"unplugged"}
    jsonschema.validate(listed.json, LIST_RESPONSE)  # open_mode null and state unplugged are in the schema
    jsonschema.validate(owner.call("GET", f"/api/v1/pdbs/{owner.pdb_id}").json, PDB_BODY)
    everything = owner.call("GET", "/api/v1/pdbs?page_size=100").json
    jsonschema.validate(everything, LIST_RESPONSE)

    mounted = data_of(gql(daemon, "{ pdbs(state: MOUNTED, first: 100) { edges { node { pdbId state } } } }"))
    nodes = {edge["node"]["pdbId"]: edge["node"]["state"] for edge in mounted["pdbs"]["edges"]}
    assert nodes.get(owner.pdb_id) == "MOUNTED"
