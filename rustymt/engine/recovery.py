"""Startup recovery of PDB lifecycle operations: finish or roll back.

Every operation follows one protocol (rustymt.engine.storage):

  create/clone/plug   1. build the PDB in staging/<kind>-<pdb_id>-<rand>, fsync
                      2. commit the catalog row (one transaction)
                      3. rename the stage to pdbs/<pdb_id>
                      (plug in place: 4. unlink the unplugged names, listed in
                      the folder's RELEASE_FILE, then the list itself)
So after a crash the catalog decides, per build stage:

  catalog has the PDB and no folder exists   -> finish: rename into place
  anything else                              -> roll back: delete the stage

and a published folder that still holds RELEASE_FILE finishes its release.
(Drop is the PDB service's — commit `dropped`, then remove the folder — and
so is its reconcile, rustymt.service.pdbs.PdbService.reconcile_storage, which
runs after this and removes every stage left.)
`catalog_states` maps pdb_id -> catalog state for every row the catalog has.
"""
from __future__ import annotations

import json
import os

from rustymt.engine import storage

BUILD_KINDS = ("create", "clone", "plug")
GONE_STATES = ("dropped",)
RELEASE_FILE = ".release.json"


def parse_stage(name: str) -> tuple[str, str] | None:
    """'clone-p_1-ab12cd' -> ('clone', 'p_1'); None for names of no operation."""
    kind, _, rest = name.partition("-")
    pdb_id, _, _rand = rest.rpartition("-")
    if not kind or not pdb_id:
        return None
    return kind, pdb_id


def write_release_list(stage: str, paths: list[str]) -> None:
    with open(os.path.join(stage, RELEASE_FILE), "w") as handle:
        json.dump(paths, handle)
        handle.flush()
        os.fsync(handle.fileno())


def finish_release(folder: str) -> bool:
    """Unlink what an in-place plug listed; True if there was a list."""
    marker = os.path.join(folder, RELEASE_FILE)
    if not os.path.exists(marker):
        return False
    with open(marker) as handle:
        paths = json.load(handle)
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)
    os.unlink(marker)
    return True


def recover(data_dir: str, catalog_states: dict[str, str],
            kinds: tuple[str, ...] = BUILD_KINDS) -> list[tuple[str, str]]:
    """Finish or roll back every interrupted build of `kinds` (other stages are
    left alone); returns [(stage or folder, action)]."""
    root = storage.staging_dir(data_dir)
    os.makedirs(root, mode=0o700, exist_ok=True)
    os.makedirs(storage.pdbs_dir(data_dir), mode=0o700, exist_ok=True)
    actions = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        parsed = parse_stage(name)
        kind, pdb_id = parsed if parsed else ("", "")
        if kind not in kinds:
            continue
        live = pdb_id in catalog_states and catalog_states[pdb_id] not in GONE_STATES
        has_folder = bool(pdb_id) and os.path.exists(storage.pdb_dir(data_dir, pdb_id))
        if kind in BUILD_KINDS and live and not has_folder and os.path.isfile(os.path.join(path, storage.DICTIONARY_FILE)):
            storage.publish(data_dir, path, pdb_id)
            actions.append((name, "finished"))
        else:
            storage.discard(path)
            actions.append((name, "removed"))
    for pdb_id in sorted(os.listdir(storage.pdbs_dir(data_dir))):
        folder = storage.pdb_dir(data_dir, pdb_id) if pdb_id != storage.SEED_ID else None
        if folder and finish_release(folder):
            actions.append((pdb_id, "released"))
    return actions
