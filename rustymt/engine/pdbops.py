"""The crash-safe sequence of each PDB lifecycle operation, with the catalog
commit handed in as a callback (`commit()`: one catalog transaction).

The order is what rustymt.engine.recovery relies on: stage and fsync,
commit, then the steps recovery can redo (rename into place, release,
removal). Each step boundary is a crash point (rustymt.engine.crashpoint),
which the crash tests use to SIGKILL the daemon exactly there.
"""
from __future__ import annotations

import os

from rustymt.engine import clone, crashpoint, manifest, recovery, storage


def create_from_seed(data_dir: str, pdb_id: str, pdb_name: str, admin_user: str, admin_verifier: str,
                     commit, before_publish=None) -> str:
    stage = storage.stage_pdb_from_seed(data_dir, pdb_id, pdb_name, admin_user, admin_verifier)
    return _commit_and_publish(data_dir, stage, pdb_id, commit, before_publish, crashpoint.steps("create", pdb_name))


def clone_from(data_dir: str, source_folder: str, pdb_id: str, pdb_name: str, clone_type: str, commit,
               allow_full_copy: bool = False, progress: clone.Progress | None = None,
               on_stage=None, before_publish=None) -> tuple[str, dict]:
    """on_stage(stage) is told the staging folder as soon as it is complete."""
    stage, facts = clone.clone_pdb(data_dir, source_folder, pdb_id, pdb_name, clone_type,
                                   allow_full_copy=allow_full_copy, progress=progress)
    step = crashpoint.steps(f"clone_{clone_type}", pdb_name)
    if on_stage is not None:
        try:
            on_stage(stage)
        except BaseException:
            storage.discard(stage)
            raise
        step("stage recorded")
    return _commit_and_publish(data_dir, stage, pdb_id, lambda: commit(facts), before_publish, step), facts


def plug(data_dir: str, parsed_manifest: dict, datafiles_dir: str, pdb_id: str, pdb_name: str,
         copy_datafiles: bool, commit, before_publish=None) -> str:
    step = crashpoint.steps("plug_copy" if copy_datafiles else "plug_in_place", pdb_name)
    stage = manifest.stage_plug(data_dir, parsed_manifest, datafiles_dir, pdb_id, pdb_name, copy_datafiles)
    folder = _commit_and_publish(data_dir, stage, pdb_id, commit, before_publish, step)
    if recovery.finish_release(folder, step):
        step("released")
    return folder


def _commit_and_publish(data_dir: str, stage: str, pdb_id: str, commit, before_publish, step) -> str:
    try:
        commit()
    except BaseException:
        storage.discard(stage)
        raise
    step("committed")
    if before_publish is not None:  # e.g. writing common users into the new dictionary
        before_publish(stage)
        step("before publish done")
    folder = storage.publish(data_dir, stage, pdb_id)
    step("published")
    return folder


def unplug(data_dir: str, pdb_id: str, xml_path: str, tenant_id: str | None, commit,
           datafiles_dir: str | None = None) -> dict:
    """Unplug a closed PDB: its manifest at xml_path and, with datafiles_dir
    (keep_datafiles false), its datafiles moved to that new folder.

    intent recorded -> WALs checkpointed -> (move: datafiles exported) ->
    manifest written (never over a file) -> commit(answer) -> (move: the PDB
    folder leaves pdbs/) -> intent removed. Up to the commit a failure, or a
    crash and startup recovery, removes what was written and leaves the PDB
    as it was; after it, recovery finishes the removal.
    Returns {xml_manifest, size_bytes, datafiles_dir, method}."""
    step = crashpoint.steps("unplug_move" if datafiles_dir else "unplug_keep", pdb_id)
    folder = storage.pdb_dir(data_dir, pdb_id)
    stage = storage._new_stage(data_dir, f"unplug-{pdb_id}")
    try:
        recovery.write_intent(stage, pdb_id, xml_path, datafiles_dir)
        if datafiles_dir:
            os.mkdir(datafiles_dir, 0o700)  # new, or FileExistsError (and then not ours to remove)
    except BaseException:
        storage.discard(stage)
        raise
    step("intent recorded")
    try:
        manifest.checkpoint_datafiles(folder)
        step("checkpointed")
        data = manifest.build(folder, tenant_id, datafiles_dir)
        answer = {"xml_manifest": xml_path, "size_bytes": clone.folder_bytes(folder),
                  "datafiles_dir": datafiles_dir or folder, "method": "keep"}
        if datafiles_dir:
            answer["method"] = manifest.export_datafiles(
                folder, datafiles_dir, manifest.parse(data)["datafiles"],
                lambda name: step(f"exported {name}"))
            step("datafiles exported")
        manifest.write(xml_path, data)
        step("manifest written")
        commit(answer)
    except BaseException:
        recovery.roll_back_unplug(stage)
        raise
    step("committed")
    recovery.finish_unplug(data_dir, stage, step)
    step("intent removed")
    return answer
