"""The service layer with a real Fleet (a real instance process) in this test
process: the events each PDB transition publishes, slots that stay put, and
the hooks hostd uses (on_spawn / on_exit, placement -> a dedicated instance)."""
from __future__ import annotations

import asyncio
import os

import psycopg

from rustymt import config
from rustymt.catalog import pdbs as pdb_rows
from rustymt.catalog.db import Catalog, catalog_path
from rustymt.events.bus import EventBus
from rustymt.service.authz import Principal
from rustymt.service.capacity import HostCapacity
from rustymt.service.fleet import Fleet
from rustymt.service.services import Services
from tests.daemon_engine.conftest import port_range_env

ADMIN = Principal.from_claims({"roles": ["cdb_admin"], "user_id": "op", "username": "op"})
PASSWORD = "correct horse battery"


def build(data_dir: str, placement_of=None, spawned=None, exited=None):
    settings = config.load(None, env=port_range_env(), overrides={"server.data_dir": data_dir})
    os.makedirs(os.path.join(data_dir, "run"), exist_ok=True)
    catalog = Catalog.open(catalog_path(data_dir))
    with catalog.write() as conn:
        from rustymt.catalog import cdb as cdb_rows
        cdb_rows.ensure_cdb(conn, "CDB_T", "2026-01-01T00:00:00Z")
    bus = EventBus()
    fleet = Fleet(settings, catalog, bus, placement_of=placement_of,
                  on_spawn=(lambda pid, tenant: spawned.append((pid, tenant))) if spawned is not None else None,
                  on_exit=(lambda pid, tenant: exited.append((pid, tenant))) if exited is not None else None)
    return Services(catalog, settings, bus, HostCapacity(cpu_percent=10_000), fleet=fleet), fleet, catalog, bus


def test_pdb_events_and_stable_slots(tmp_path):
    async def scenario():
        services, fleet, catalog, bus = build(str(tmp_path / "d"))
        await fleet.start()
        try:
            subscription = bus.subscribe({"pdb.created", "pdb.opened", "pdb.closed", "pdb.dropped", "pdb.state.changed"})
            tenant = await services.tenants.create(ADMIN, tenant_name="evt", admin_user="a@evt", admin_password=PASSWORD,
                                                   service_tier="silver")
            pdb_id = tenant["pdb_id"]
            await services.pdbs.close(ADMIN, pdb_id, mode="immediate")
            await services.pdbs.drop(ADMIN, pdb_id, keep_datafiles=False)
            events = []
            while len(events) < 7:
                events.append(await asyncio.wait_for(subscription.__anext__(), 5))
            subscription.close()
            with catalog.read() as conn:
                slot = pdb_rows.slot_of(conn, tenant["tenant_id"])
            return tenant, events, slot
        finally:
            await fleet.stop()
            catalog.close()

    tenant, events, slot = asyncio.run(scenario())
    assert [event.event_type for event in events] == [
        "pdb.created", "pdb.opened", "pdb.state.changed", "pdb.closed", "pdb.state.changed", "pdb.dropped", "pdb.state.changed"]
    changes = [(e.data["old_state"], e.data["new_state"]) for e in events if e.event_type == "pdb.state.changed"]
    assert changes == [("mounted", "open"), ("open", "closed"), ("closed", "dropped")]
    assert all(e.tenant_id == tenant["tenant_id"] and e.data["pdb_id"] == tenant["pdb_id"] for e in events)
    assert slot == 1


def test_dedicated_placement_gets_its_own_instance_and_hooks_run(tmp_path):
    spawned, exited = [], []
    dedicated: set[str] = set()

    async def scenario():
        services, fleet, catalog, bus = build(str(tmp_path / "d"), placement_of=lambda t: "dedicated" if t in dedicated else "shared",
                                              spawned=spawned, exited=exited)
        await fleet.start()
        try:
            shared = await services.tenants.create(ADMIN, tenant_name="plain", admin_user="a@plain", admin_password=PASSWORD,
                                                   service_tier="silver")
            moved = await services.tenants.create(ADMIN, tenant_name="mover", admin_user="a@mover", admin_password=PASSWORD,
                                                  service_tier="gold")
            port = moved["resources"]["network_port"]
            dedicated.add(moved["tenant_id"])
            await fleet.move_tenant(moved["tenant_id"], "dedicated")
            names = sorted(instance["name"] for instance in fleet.status())
            served_from = fleet.home[moved["tenant_id"]]
            rows = await asyncio.to_thread(lambda: psycopg.connect(
                host="127.0.0.1", port=port, dbname="PDB_MOVER", user="a@mover", password=PASSWORD,
                connect_timeout=5, autocommit=True).execute("SELECT 42").fetchall())
            dedicated.discard(moved["tenant_id"])
            await fleet.move_tenant(moved["tenant_id"], "shared")
            after = sorted(instance["name"] for instance in fleet.status())
            return shared, moved, names, served_from, rows, after, fleet.home[moved["tenant_id"]]
        finally:
            await fleet.stop()
            catalog.close()

    shared, moved, names, served_from, rows, after, home = asyncio.run(scenario())
    assert names == ["ded-" + moved["tenant_id"], "shared"] and served_from == "ded-" + moved["tenant_id"]
    assert rows == [(42,)]  # its PDB reopened in the dedicated instance, on the same port
    assert after == ["shared"] and home == "shared"
    assert [tenant for _, tenant in spawned] == [None, moved["tenant_id"]]
    assert {tenant for _, tenant in exited} == {None, moved["tenant_id"]}  # the dedicated one stopped, then the shared
