"""The service layer's front door: what REST and GraphQL are given.

    services = Services(catalog, settings, bus)
    await services.tenants.create(principal, tenant_name=..., ...)
    await services.cdb.status(principal)
    await services.pdbs.open(principal, pdb_id, mode="READ_WRITE")
    services.fleet                 # engine instances (rustymt.service.fleet), None in-process
"""
from __future__ import annotations

import asyncio
from typing import Any

from rustymt.catalog.db import Catalog
from rustymt.events.bus import EventBus
from rustymt.service.capacity import HostCapacity
from rustymt.service.cdb import CdbService
from rustymt.service.fleet import Fleet
from rustymt.service.pdbs import PdbService
from rustymt.service.tenants import TenantService


class Services:
    def __init__(self, catalog: Catalog, settings: Any, bus: EventBus, capacity: HostCapacity | None = None,
                 fleet: Fleet | None = None):
        self.catalog = catalog
        self.settings = settings
        self.bus = bus
        self.capacity = capacity or HostCapacity.detect()
        self.fleet = fleet  # the engine instances; None: catalog and PDB files only (in-process tests)
        self.pdbs = PdbService(catalog, settings, bus, fleet)
        self.tenants = TenantService(catalog, settings, bus, self.capacity, pdbs=self.pdbs, fleet=fleet)
        self.cdb = CdbService(catalog, settings, fleet)
        # metering, billing, SLA, webhooks (rustymt/metering, rustymt/sla, rustymt/events/webhooks.py)
        from rustymt.metering.wiring import attach_metering
        attach_metering(self)

    async def ready(self) -> bool:
        """True when the catalog answers (readiness probe)."""
        def probe():
            with self.catalog.read() as conn:
                return conn.execute("SELECT count(*) FROM cdb").fetchone()[0] == 1

        try:
            return await asyncio.to_thread(probe)
        except Exception:  # noqa: BLE001 - any failure means "not ready", reported by the probe
            return False
