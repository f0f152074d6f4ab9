"""Startup recovery of PDB lifecycle operations: finish or roll back.

Every operation follows one protocol (rustymt.engine.storage): whatever it
makes is staged first, the catalog commit decides, and what follows the
commit is repeatable, so recovery can redo it.

  create/clone/plug   1. build the PDB in staging/<kind>-<pdb_id>-<rand>, fsync
                      2. commit the catalog row (one transaction)
                      3. rename the stage to pdbs/<pdb_id>
                      (plug in place: 4. unlink the unplugged names, listed in
                      the folder's RELEASE_FILE, and their folder once empty,
                      then the list itself)
  unplug              1. record the intent: staging/unplug-<pdb_id>-<rand>/
                         INTENT_FILE = {pdb_id, xml, datafiles_dir}
                      2. (move) export the datafiles to datafiles_dir, a new
                         folder next to the manifest; write the manifest
                      3. commit the catalog: state unplugged (+ datafiles_dir)
                      4. (move) remove the PDB's folder from pdbs/
                      5. remove the intent

So after a crash the catalog decides, per stage:

  build stage, catalog has the PDB and no folder exists   -> finish: rename into place
  build stage, anything else                              -> roll back: delete the stage
  unplug intent, catalog says unplugged                   -> finish: steps 4-5
  unplug intent, anything else                            -> roll back: remove the
        manifest (only if it is this PDB's) and datafiles_dir (only if it holds
        nothing but the manifest's file names), then the intent

and a published folder that still holds RELEASE_FILE finishes its release.
(Drop is the PDB service's — commit `dropped`, then remove the folder — and
so is its reconcile, rustymt.service.pdbs.PdbService.reconcile_storage, which
runs after this and removes every stage left.)
`catalog_states` maps pdb_id -> catalog state for every row the catalog has.

The functions that finish a step take `step` (a rustymt.engine.crashpoint
stepper, step(label) at each step boundary) when an operation runs them,
None when recovery does.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import shutil

from rustymt.engine import storage

log = logging.getLogger("rustymt.recovery")

BUILD_KINDS = ("create", "clone", "plug")
GONE_STATES = ("dropped",)
RELEASE_FILE = ".release.json"
INTENT_FILE = "intent.json"


def parse_stage(name: str) -> tuple[str, str] | None:
    """'clone-p_1-ab12cd' -> ('clone', 'p_1'); None for names of no operation."""
    kind, _, rest = name.partition("-")
    pdb_id, _, _rand = rest.rpartition("-")
    if not kind or not pdb_id:
        return None
    return kind, pdb_id


def _write_json(path: str, value) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle)
        handle.flush()
        os.fsync(handle.fileno())
    storage._fsync_dir(os.path.dirname(path))


# ---- in-place plug: the unplugged names go once the plug is published


def write_release_list(stage: str, paths: list[str], folder: str | None = None) -> None:
    """paths to unlink after the publish, then folder if it is left empty."""
    _write_json(os.path.join(stage, RELEASE_FILE), {"files": paths, "folder": folder})


def finish_release(folder: str, step=None) -> bool:
    """Unlink what an in-place plug listed; True if there was a list."""
    marker = os.path.join(folder, RELEASE_FILE)
    if not os.path.exists(marker):
        return False
    with open(marker) as handle:
        listed = json.load(handle)
    if isinstance(listed, list):  # written by rustymt <= 9f33ae7: the files only
        listed = {"files": listed, "folder": None}
    for path in listed["files"]:
        if os.path.exists(path):
            os.unlink(path)
            if step is not None:
                step(f"released {os.path.basename(path)}")
    emptied = listed.get("folder")
    if emptied and os.path.isdir(emptied) and not os.listdir(emptied):
        os.rmdir(emptied)
    os.unlink(marker)
    return True


# ---- unplug


def write_intent(stage: str, pdb_id: str, xml_path: str, datafiles_dir: str | None) -> None:
    _write_json(os.path.join(stage, INTENT_FILE), {"pdb_id": pdb_id, "xml": xml_path, "datafiles_dir": datafiles_dir})


def read_intent(stage: str) -> dict | None:
    """None when the intent was never completely written: nothing else was done yet."""
    try:
        with open(os.path.join(stage, INTENT_FILE)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _remove_manifest_temps(xml: str) -> None:
    """The temp files of a manifest write a crash interrupted (rustymt.engine.manifest.write)."""
    for path in glob.glob(glob.escape(xml) + ".tmp-*"):
        os.unlink(path)


def roll_back_unplug(stage: str) -> None:
    """Undo an unplug that did not commit: its manifest and exported datafiles go, the PDB stays."""
    from rustymt.engine import manifest  # manifest imports this module's users; no cycle at import time
    intent = read_intent(stage)
    if intent is not None:
        _remove_manifest_temps(intent["xml"])
        if manifest.is_manifest_of(intent["xml"], intent["pdb_id"]):
            os.unlink(intent["xml"])
        exported = intent["datafiles_dir"]
        if exported and os.path.isdir(exported):
            # The export folder was made new by this unplug (refused when it existed);
            # still, remove it only while it holds nothing but datafiles.
            if all(name.endswith(".db") for name in os.listdir(exported)):
                shutil.rmtree(exported)
            else:
                log.warning("unplug roll back: %s holds other files; left in place", exported)
    storage.discard(stage)


def finish_unplug(data_dir: str, stage: str, step=None) -> None:
    """After the commit: a moved PDB leaves pdbs/ (its datafiles live on next to the manifest)."""
    intent = read_intent(stage)
    if intent is not None:
        _remove_manifest_temps(intent["xml"])
    if intent is not None and intent["datafiles_dir"]:
        storage.remove_pdb_files(data_dir, intent["pdb_id"])
        if step is not None:
            step("PDB folder removed")
    storage.discard(stage)


# ---- at startup


def recover(data_dir: str, catalog_states: dict[str, str],
            kinds: tuple[str, ...] = (*BUILD_KINDS, "unplug")) -> list[tuple[str, str]]:
    """Finish or roll back every interrupted operation of `kinds` (other stages are
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
        if kind == "unplug":
            if catalog_states.get(pdb_id) == "unplugged":
                finish_unplug(data_dir, path)
                actions.append((name, "finished"))
            else:
                roll_back_unplug(path)
                actions.append((name, "rolled back"))
            continue
        live = pdb_id in catalog_states and catalog_states[pdb_id] not in GONE_STATES
        has_folder = bool(pdb_id) and os.path.exists(storage.pdb_dir(data_dir, pdb_id))
        if live and not has_folder and os.path.isfile(os.path.join(path, storage.DICTIONARY_FILE)):
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
