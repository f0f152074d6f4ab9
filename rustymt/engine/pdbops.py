"""The crash-safe sequence of each PDB lifecycle operation, with the catalog
commit handed in as a callback (`commit()`: one catalog transaction).

The order is what rustymt.engine.recovery relies on: build in staging and
fsync, commit, rename into place (drop is the PDB service's: commit, then remove). The
daemon's service layer and the crash tests both run these functions, so what
the crash tests kill is the code that runs in production.
"""
from __future__ import annotations

from rustymt.engine import clone, manifest, recovery, storage


def create_from_seed(data_dir: str, pdb_id: str, pdb_name: str, admin_user: str, admin_verifier: str,
                     commit, before_publish=None) -> str:
    stage = storage.stage_pdb_from_seed(data_dir, pdb_id, pdb_name, admin_user, admin_verifier)
    return _commit_and_publish(data_dir, stage, pdb_id, commit, before_publish)


def clone_from(data_dir: str, source_folder: str, pdb_id: str, pdb_name: str, clone_type: str, commit,
               allow_full_copy: bool = False, progress: clone.Progress | None = None,
               on_stage=None, before_publish=None) -> tuple[str, dict]:
    """on_stage(stage) is told the staging folder as soon as it is complete."""
    stage, facts = clone.clone_pdb(data_dir, source_folder, pdb_id, pdb_name, clone_type,
                                   allow_full_copy=allow_full_copy, progress=progress)
    if on_stage is not None:
        on_stage(stage)
    return _commit_and_publish(data_dir, stage, pdb_id, lambda: commit(facts), before_publish), facts


def plug(data_dir: str, parsed_manifest: dict, datafiles_dir: str, pdb_id: str, pdb_name: str,
         copy_datafiles: bool, commit, before_publish=None) -> str:
    stage = manifest.stage_plug(data_dir, parsed_manifest, datafiles_dir, pdb_id, pdb_name, copy_datafiles)
    folder = _commit_and_publish(data_dir, stage, pdb_id, commit, before_publish)
    recovery.finish_release(folder)
    return folder


def _commit_and_publish(data_dir: str, stage: str, pdb_id: str, commit, before_publish) -> str:
    try:
        commit()
    except BaseException:
        storage.discard(stage)
        raise
    if before_publish is not None:  # e.g. writing common users into the new dictionary
        before_publish(stage)
    return storage.publish(data_dir, stage, pdb_id)


def unplug(folder: str, xml_path: str, tenant_id: str | None, commit) -> dict:
    """Manifest first (atomic write), then the catalog: a crash in between leaves
    a closed PDB and a stray manifest, never an unplugged PDB without one."""
    answer = manifest.unplug(folder, xml_path, tenant_id)
    commit(answer)
    return answer

