"""Run one PDB lifecycle operation the way the daemon does — the same sequence
functions (rustymt.engine.pdbops) with the real catalog; drop through the PDB
service itself — so that a test can SIGKILL it at a random point.

    python -m tests.lifecycle.crash_driver <data_dir> <op> <json args>

Prints "go" when the imports are done and the operation starts, "done" at the end.
"""
from __future__ import annotations

import asyncio
import json
import sys

from rustymt import config
from rustymt.catalog.db import Catalog, catalog_path
from rustymt.engine import manifest, pdbops, scram, storage
from rustymt.events.bus import EventBus
from rustymt.service.authz import Principal
from rustymt.service.pdbs import PdbService


def insert_row(catalog, pdb_id: str, name: str, state: str) -> None:
    now = storage.now_iso()
    with catalog.write() as conn:
        conn.execute("INSERT INTO pdbs(pdb_id, pdb_name, tenant_id, state, open_mode, created_at, updated_at) "
                     "VALUES (?, ?, NULL, ?, NULL, ?, ?)", (pdb_id, name, state, now, now))


def set_state(catalog, pdb_id: str, state: str) -> None:
    with catalog.write() as conn:
        conn.execute("UPDATE pdbs SET state = ?, updated_at = ? WHERE pdb_id = ?", (state, storage.now_iso(), pdb_id))


def main() -> int:
    data_dir, op, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    catalog = Catalog.open(catalog_path(data_dir))
    storage.ensure_seed(data_dir)
    verifier = scram.make_verifier("crash-pw-1")
    print("go", flush=True)
    target, name = args.get("target"), args.get("name")
    if op == "create":
        pdbops.create_from_seed(data_dir, target, name, "admin", verifier,
                                lambda: insert_row(catalog, target, name, "mounted"))
    elif op.startswith("clone_"):
        pdbops.clone_from(data_dir, storage.pdb_dir(data_dir, args["source"]), target, name, op[len("clone_"):],
                          lambda facts: insert_row(catalog, target, name, "mounted"), allow_full_copy=True)
    elif op == "unplug":
        pdbops.unplug(storage.pdb_dir(data_dir, args["source"]), args["xml"], None,
                      lambda answer: set_state(catalog, args["source"], "unplugged"))
    elif op == "plug":
        parsed = manifest.read(args["xml"])
        pdbops.plug(data_dir, parsed, parsed["datafiles_dir"], target, name, args["copy"],
                    lambda: insert_row(catalog, target, name, "mounted"))
    elif op == "drop":
        service = PdbService(catalog, config.load(None, env={}, overrides={"server.data_dir": data_dir}), EventBus())
        operator = Principal.from_claims({"roles": ["cdb_admin"]})
        asyncio.run(service.drop(operator, args["source"], keep_datafiles=False))
    else:
        raise SystemExit(f"unknown op {op}")
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
