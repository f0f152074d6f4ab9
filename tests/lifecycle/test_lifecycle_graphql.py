"""GraphQL lifecycle mutations and the cloneProgress subscription against the
real daemon of test_lifecycle_api (same module-scoped fixture pattern)."""
from __future__ import annotations

import asyncio
import os
import random

import pytest

from tests.graphql.client import WsClient, data_of, gql
from tests.lifecycle.test_lifecycle_api import Tenant, series


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from tests.daemon import Daemon

    low = random.randrange(21000, 32000, 100)
    daemon = Daemon.start(str(tmp_path_factory.mktemp("lifecyclegql") / "data"), {"RUSTYMT_TENANT_PORTS": f"{low}-{low + 99}"})
    yield daemon
    daemon.stop()


CLONE = """mutation($src: ID!, $name: String!, $type: CloneType!) {
  clonePdb(input: {sourcePdbId: $src, targetName: $name, cloneType: $type, openAfterClone: false}) {
    __typename ... on CloneJob { jobId sourcePdb targetPdb status } ... on PdbError { code message } } }"""
PROGRESS = "subscription($j: ID!) { cloneProgress(jobId: $j) { jobId progress bytesTransferred estimatedCompletion status } }"
PDB_RESULT = "__typename ... on PDB { pdbId pdbName state } ... on PdbError { code message details }"


def test_clone_progress_subscription_and_mutations(daemon):
    acme = Tenant(daemon, "gqlacme")
    with acme.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE t(b BLOB)")
        conn.execute("INSERT INTO t SELECT randomblob(4000) FROM " + series(6000))

    async def scenario():
        async with WsClient.opened(daemon, daemon.admin_token) as client:
            answer = await asyncio.to_thread(gql, daemon, CLONE, {"src": acme.pdb_id, "name": "GQL_COPY", "type": "HOT"})
            job = data_of(answer)["clonePdb"]
            assert job["__typename"] == "CloneJob" and job["targetPdb"] == "GQL_COPY", job
            await client.subscribe("c1", PROGRESS, {"j": job["jobId"]})
            updates = []
            while True:
                message = await client.receive(30)
                if message.get("id") != "c1":
                    continue
                if message["type"] == "complete":
                    break
                assert message["type"] == "next", message
                updates.append(message["payload"]["data"]["cloneProgress"])
            return job, updates

    job, updates = asyncio.run(asyncio.wait_for(scenario(), 60))
    # 24 MB at 4 MB per backup step: the job is still running when the subscription starts.
    assert updates and updates[-1]["status"] == "completed" and updates[-1]["progress"] == 1.0
    assert all(u["jobId"] == job["jobId"] for u in updates)
    assert [u["progress"] for u in updates] == sorted(u["progress"] for u in updates)
    assert updates[-1]["bytesTransferred"] > 6000 * 4000

    profile = gql(daemon, """mutation { createLockdownProfile(input: {name: "GQL_P", disabledStatements: ["DROP TABLE"]}) {
        __typename ... on LockdownProfile { name disabledStatements pdbs } } }""")
    assert data_of(profile)["createLockdownProfile"] == {"__typename": "LockdownProfile", "name": "GQL_P",
                                                         "disabledStatements": ["DROP TABLE"], "pdbs": []}
    applied = gql(daemon, f'mutation {{ applyLockdownProfile(pdbId: "{acme.pdb_id}", profileName: "GQL_P") {{ {PDB_RESULT} }} }}')
    assert data_of(applied)["applyLockdownProfile"]["pdbId"] == acme.pdb_id
    user = gql(daemon, 'mutation { createCommonUser(input: {username: "C##GQL", password: "gql-password-1"}) '
                       '{ __typename ... on CommonUser { username pdbs } ... on PdbError { code } } }')
    assert data_of(user)["createCommonUser"] == {"__typename": "CommonUser", "username": "C##GQL", "pdbs": []}
    bad = gql(daemon, 'mutation { createCommonUser(input: {username: "gql", password: "gql-password-1"}) '
                      '{ __typename ... on PdbError { code } } }')
    assert data_of(bad)["createCommonUser"]["__typename"] == "PdbError"
    with acme.connect(user="C##GQL", password="gql-password-1") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    target = data_of(gql(daemon, f'{{ pdbByName(name: "GQL_COPY") {{ pdbId state }} }}'))["pdbByName"]
    assert target["state"] == "MOUNTED"
    closed = gql(daemon, f'mutation {{ closePdb(pdbId: "{acme.pdb_id}", closeMode: IMMEDIATE) {{ {PDB_RESULT} }} }}')
    assert data_of(closed)["closePdb"]["state"] == "CLOSED"
    xml = os.path.join(daemon.data_dir, "exports", "gql.xml")
    unplugged = gql(daemon, f'mutation {{ unplugPdb(input: {{pdbId: "{acme.pdb_id}", xmlPath: "gql.xml", keepDatafiles: true}}) '
                            f'{{ {PDB_RESULT} }} }}')
    assert data_of(unplugged)["unplugPdb"]["state"] == "MOUNTED" and os.path.isfile(xml)  # spec enum: no UNPLUGGED
    plugged = gql(daemon, f'mutation {{ plugPdb(input: {{xmlPath: "{xml}", pdbName: "GQL_BACK", copyDatafiles: true}}) '
                          f'{{ {PDB_RESULT} }} }}')
    assert data_of(plugged)["plugPdb"]["state"] == "MOUNTED"
    dropped = gql(daemon, f'mutation {{ dropPdb(pdbId: "{target["pdbId"]}", keepDatafiles: false) {{ {PDB_RESULT} }} }}')
    assert data_of(dropped)["dropPdb"]["state"] == "DROPPED"
    assert not os.path.exists(os.path.join(daemon.data_dir, "pdbs", target["pdbId"]))
