"""CDB-wide operations: status of the container database."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from rustymt.catalog import cdb as cdb_rows
from rustymt.catalog.db import Catalog
from rustymt.service import authz
from rustymt.service.authz import Principal

PERMISSION = {"status": "cdb:admin"}

# SQLite has no shared undo or temp tablespace: undo is each PDB's own journal
# and temp space is per connection. Reported as 0 with the reason, not invented.
NO_SHARED_TABLESPACE = "SQLite keeps undo (rollback journal/WAL) and temp storage per PDB file; there is no shared tablespace"


class CdbService:
    def __init__(self, catalog: Catalog, settings: Any, fleet: Any = None):
        self.catalog = catalog
        self.settings = settings
        self.fleet = fleet  # engine instances: their pid, uptime, restarts, health
        self.started = time.monotonic()

    async def status(self, principal: Principal) -> dict:
        authz.require(principal, PERMISSION["status"])

        def query():
            with self.catalog.read() as conn:
                return cdb_rows.get_cdb(conn), cdb_rows.count_pdbs(conn)

        identity, counts = await asyncio.to_thread(query)
        empty = {"size_gb": 0, "used_gb": 0.0, "source": NO_SHARED_TABLESPACE}
        return {
            "cdb_name": identity["cdb_name"] if identity else self.settings.cdb.name,
            "total_pdbs": counts["total"],
            "max_pdbs": self.settings.cdb.max_pdbs,
            "open_pdbs": await self.fleet.open_pdb_count() if self.fleet is not None else counts["open"],
            "seed_pdb": cdb_rows.SEED_PDB,
            "uptime_seconds": int(time.monotonic() - self.started),
            "shared_services": {"undo_tablespace": dict(empty), "temp_tablespace": dict(empty)},
            "instances": self.fleet.status() if self.fleet is not None else [],
        }
