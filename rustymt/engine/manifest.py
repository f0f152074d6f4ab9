"""Unplug manifests (XML) and plug compatibility checks.

An unplugged PDB is its folder of datafiles plus one XML file that says what
the folder must contain, in the spirit of Oracle's unplug XML:

    <pdb xmlns="urn:rustymt:pdb-manifest:1" format="1">
      <name>PDB_ACME</name> <pdb_id>..</pdb_id> <guid>..</guid> <tenant_id>..</tenant_id>
      <created_at>..</created_at> <unplugged_at>..</unplugged_at>
      <versions rustymt="0.1.0" sqlite="3.45.1"/>
      <storage page_size="4096" encoding="UTF-8"/>
      <datafiles_dir>/abs/folder</datafiles_dir>
      <tablespaces><tablespace name="users" file="users.db"/>..</tablespaces>
      <datafiles><datafile name="users.db" size="8192" sha256=".."/>..</datafiles>
      <users><user name="admin" admin="true" verifier="SCRAM-SHA-256$.."/>..</users>
      <lockdown profile="P1">[json rules]</lockdown>
    </pdb>

check_plug_compatibility() is DBMS_PDB.CHECK_PLUG_COMPATIBILITY: it returns
every problem as a violation {severity ERROR|WARNING, message, action} (the
rows of PDB_PLUG_IN_VIOLATIONS) instead of stopping at the first one; a plug
proceeds only with no ERROR. The XML comes from outside, so it is parsed with
defusedxml (no DTDs, no entity expansion) and size-capped.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
import xml.etree.ElementTree as ET

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

import rustymt
from rustymt._native import _core
from rustymt.engine import storage
from rustymt.engine.storage import execute

NS = "urn:rustymt:pdb-manifest:1"
FORMAT = "1"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
HASH_CHUNK = 1 << 20


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _storage_facts(folder: str) -> tuple[int, str]:
    conn = _core.Connection(os.path.join(folder, storage.DEFAULT_TABLESPACE + ".db"), readonly=True, create=False)
    try:
        return execute(conn, "PRAGMA page_size")[0][0], execute(conn, "PRAGMA encoding")[0][0]
    finally:
        conn.close()


def checkpoint_datafiles(folder: str) -> None:
    """Fold every WAL into its database file so each datafile is one self-contained file."""
    for name in sorted(os.listdir(folder)):
        if name.endswith(".db"):
            conn = _core.Connection(os.path.join(folder, name), create=False)
            try:
                conn.busy_timeout(5000)
                execute(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            for suffix in ("-wal", "-shm"):
                path = os.path.join(folder, name + suffix)
                if os.path.exists(path) and os.path.getsize(path) == 0:
                    os.unlink(path)


def build(folder: str, tenant_id: str | None, datafiles_dir: str | None = None) -> bytes:
    """The manifest of a closed PDB folder (call checkpoint_datafiles first)."""
    dictionary = storage.read_dictionary(folder)
    info = dictionary["info"]
    page_size, encoding = _storage_facts(folder)
    root = ET.Element(_q("pdb"), {"format": FORMAT})

    def text(tag: str, value) -> None:
        ET.SubElement(root, _q(tag)).text = "" if value is None else str(value)

    text("name", info.get("pdb_name"))
    text("pdb_id", info.get("pdb_id"))
    text("guid", info.get("guid"))
    text("tenant_id", tenant_id)
    text("created_at", info.get("created_at"))
    text("unplugged_at", storage.now_iso())
    ET.SubElement(root, _q("versions"), {"rustymt": rustymt.__version__, "sqlite": _core.sqlite_version(),
                                         "format": info.get("format", storage.FORMAT_VERSION)})
    ET.SubElement(root, _q("storage"), {"page_size": str(page_size), "encoding": encoding})
    text("datafiles_dir", os.path.abspath(datafiles_dir or folder))
    spaces = ET.SubElement(root, _q("tablespaces"))
    for name, file in dictionary["tablespaces"].items():
        ET.SubElement(spaces, _q("tablespace"), {"name": name, "file": file})
    files = ET.SubElement(root, _q("datafiles"))
    for name in sorted(os.listdir(folder)):
        if name.endswith(".db"):
            path = os.path.join(folder, name)
            ET.SubElement(files, _q("datafile"), {"name": name, "size": str(os.path.getsize(path)),
                                                   "sha256": sha256_file(path)})
    users = ET.SubElement(root, _q("users"))
    for name, entry in sorted(dictionary["users"].items()):
        ET.SubElement(users, _q("user"), {"name": name, "admin": "true" if entry["is_admin"] else "false",
                                          "verifier": entry["verifier"]})
    lock = dictionary["lockdown"]
    if lock:
        ET.SubElement(root, _q("lockdown"), {"profile": lock["profile"]}).text = lock["rules"]
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write(path: str, data: bytes) -> None:
    """Write the manifest atomically and never over an existing file (temp
    file, fsync, link to the name: EEXIST if it is taken, then unlink the temp)."""
    temp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    storage._fsync_dir(os.path.dirname(os.path.abspath(path)))


def is_manifest_of(path: str, pdb_id: str) -> bool:
    """Whether path is a manifest of that PDB (recovery removes only its own manifests)."""
    try:
        return read(path)["pdb_id"] == pdb_id
    except (OSError, ManifestError):
        return False


class ManifestError(ValueError):
    """The manifest cannot be read at all (not XML, not ours)."""


def parse(data: bytes) -> dict:
    """Untrusted XML -> a plain dict; ManifestError if it is not a manifest of ours."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        root = SafeET.fromstring(data)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise ManifestError(f"manifest is not well-formed XML: {exc}") from None
    if root.tag != _q("pdb"):
        raise ManifestError(f"not a rustymt PDB manifest (root element {root.tag!r}, expected pdb in {NS})")

    def text(tag: str, required: bool = True) -> str | None:
        node = root.find(_q(tag))
        if node is None or not (node.text or "").strip():
            if required:
                raise ManifestError(f"manifest lacks <{tag}>")
            return None
        return node.text.strip()

    def attrs(tag: str) -> dict:
        node = root.find(_q(tag))
        if node is None:
            raise ManifestError(f"manifest lacks <{tag}>")
        return dict(node.attrib)

    try:
        datafiles = [{"name": d.attrib["name"], "size": int(d.attrib["size"]), "sha256": d.attrib["sha256"]}
                     for d in root.iterfind(f"{_q('datafiles')}/{_q('datafile')}")]
        storage_attrs = attrs("storage")
        lock = root.find(_q("lockdown"))
        return {
            "format": root.attrib.get("format"),
            "name": text("name"), "pdb_id": text("pdb_id"), "guid": text("guid"),
            "tenant_id": text("tenant_id", required=False),
            "created_at": text("created_at", required=False), "unplugged_at": text("unplugged_at", required=False),
            "versions": attrs("versions"),
            "page_size": int(storage_attrs["page_size"]), "encoding": storage_attrs["encoding"],
            "datafiles_dir": text("datafiles_dir"),
            "tablespaces": {t.attrib["name"]: t.attrib["file"]
                            for t in root.iterfind(f"{_q('tablespaces')}/{_q('tablespace')}")},
            "datafiles": datafiles,
            "users": [{"name": u.attrib["name"], "admin": u.attrib.get("admin") == "true",
                       "verifier": u.attrib["verifier"]} for u in root.iterfind(f"{_q('users')}/{_q('user')}")],
            "lockdown": {"profile": lock.attrib["profile"], "rules": lock.text or "[]"} if lock is not None else None,
        }
    except (KeyError, ValueError) as exc:
        raise ManifestError(f"manifest element malformed: {exc}") from None


def violation(severity: str, message: str, action: str) -> dict:
    return {"severity": severity, "message": message, "action": action}


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:3])
    except ValueError:
        return (0,)


def check_plug_compatibility(manifest: dict, datafiles_dir: str, plugged_names: set[str],
                             plugged_guids: set[str], pdb_name: str | None = None) -> list[dict]:
    """Every reason the manifest's PDB cannot (ERROR) or should not quite (WARNING) be plugged."""
    found: list[dict] = []
    if manifest.get("format") != FORMAT:
        found.append(violation("ERROR", f"manifest format {manifest.get('format')!r} is not {FORMAT}",
                               "Unplug the PDB again with this rustymt version"))
    sqlite_here, sqlite_there = _core.sqlite_version(), manifest["versions"].get("sqlite", "0")
    if _version_tuple(sqlite_there)[:1] != _version_tuple(sqlite_here)[:1]:
        found.append(violation("ERROR", f"datafiles written by SQLite {sqlite_there}, this CDB runs {sqlite_here}",
                               "Plug into a CDB with SQLite 3.x"))
    elif _version_tuple(sqlite_there) > _version_tuple(sqlite_here):
        found.append(violation("WARNING", f"datafiles written by a newer SQLite {sqlite_there} (this CDB: {sqlite_here})",
                               "Check the PDB opens; newer file-format features may be refused"))
    rmt_there = manifest["versions"].get("rustymt", "0")
    if _version_tuple(rmt_there) > _version_tuple(rustymt.__version__):
        found.append(violation("WARNING", f"unplugged by a newer rustymt {rmt_there} (this CDB: {rustymt.__version__})",
                               "Upgrade this CDB before plugging"))
    page_size = manifest["page_size"]
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        found.append(violation("ERROR", f"page size {page_size} is not a valid SQLite page size",
                               "Unplug the PDB again; the manifest is damaged"))
    if manifest["encoding"] not in ("UTF-8", "UTF-16le", "UTF-16be"):
        found.append(violation("ERROR", f"encoding {manifest['encoding']!r} unknown", "Unplug the PDB again"))
    elif manifest["encoding"] != "UTF-8":
        found.append(violation("WARNING", f"datafiles are {manifest['encoding']}; the wire speaks UTF-8",
                               "Text is converted on every read; consider exporting to UTF-8"))
    name = pdb_name or manifest["name"]
    if name.lower() in {n.lower() for n in plugged_names}:
        found.append(violation("ERROR", f"a PDB named {name} is already plugged in",
                               "Give the plugged PDB another pdb_name, or drop the existing one"))
    if manifest["guid"] in plugged_guids:
        found.append(violation("ERROR", f"a PDB with GUID {manifest['guid']} is already plugged in",
                               "Plug a copy (copy_datafiles) after dropping the existing PDB, or clone it instead"))
    names = {d["name"] for d in manifest["datafiles"]}
    if storage.DICTIONARY_FILE not in names:
        found.append(violation("ERROR", f"manifest lists no {storage.DICTIONARY_FILE}", "Unplug the PDB again"))
    for space, file in manifest["tablespaces"].items():
        if file not in names:
            found.append(violation("ERROR", f"tablespace {space} file {file} is not among the datafiles",
                                   "Unplug the PDB again"))
    for entry in manifest["datafiles"]:
        if os.path.basename(entry["name"]) != entry["name"] or entry["name"].startswith("."):
            found.append(violation("ERROR", f"datafile name {entry['name']!r} is not a plain file name",
                                   "Do not edit the manifest by hand"))
            continue
        path = os.path.join(datafiles_dir, entry["name"])
        if not os.path.isfile(path):
            found.append(violation("ERROR", f"datafile {entry['name']} missing from {datafiles_dir}",
                                   "Copy every datafile next to the manifest's datafiles_dir"))
            continue
        size = os.path.getsize(path)
        if size != entry["size"]:
            found.append(violation("ERROR", f"datafile {entry['name']} is {size} bytes, manifest says {entry['size']}",
                                   "Restore the datafile the PDB was unplugged with"))
            continue
        if sha256_file(path) != entry["sha256"]:
            found.append(violation("ERROR", f"datafile {entry['name']} SHA-256 does not match the manifest",
                                   "Restore the datafile the PDB was unplugged with"))
    return found


# ---- unplug and plug on disk


def unplug(folder: str, xml_path: str, tenant_id: str | None) -> dict:
    """Write the manifest of a closed PDB folder, datafiles kept where they are
    (no crash protocol: rustymt.engine.pdbops.unplug is the daemon's);
    returns {xml_manifest, size_bytes}."""
    checkpoint_datafiles(folder)
    data = build(folder, tenant_id)
    write(xml_path, data)
    return {"xml_manifest": os.path.abspath(xml_path), "size_bytes": storage.storage_bytes(folder)}


# Hard links fail across filesystems (EXDEV) and on filesystems without them.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP)


def export_datafiles(folder: str, target_dir: str, datafiles: list[dict], on_file=None) -> str:
    """Give the manifest's datafiles a second name in target_dir, the empty
    folder the caller made: a hard link on the same filesystem (a rename in
    two steps: the PDB folder stays whole until the caller removes it after
    its commit), otherwise a copy, fsynced and read back against the
    manifest's SHA-256. on_file(name) after each file. Returns "link" if every
    file was linked, else "copy"."""
    method = "link"
    for entry in datafiles:
        source, target = os.path.join(folder, entry["name"]), os.path.join(target_dir, entry["name"])
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            method = "copy"
            shutil.copyfile(source, target)
            with open(target, "rb") as handle:
                os.fsync(handle.fileno())
            if os.path.getsize(target) != entry["size"] or sha256_file(target) != entry["sha256"]:
                raise OSError(errno.EIO, f"the copy of {entry['name']} in {target_dir} does not match its "
                                         "SHA-256 in the manifest")
        os.chmod(target, 0o600)
        if on_file is not None:
            on_file(entry["name"])
    storage._fsync_tree(target_dir)
    storage._fsync_dir(os.path.dirname(os.path.abspath(target_dir)))
    return method


def read(xml_path: str) -> dict:
    with open(xml_path, "rb") as handle:
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    return parse(data)


def stage_plug(data_dir: str, manifest: dict, datafiles_dir: str, pdb_id: str, pdb_name: str,
               copy_datafiles: bool) -> str:
    """Build the plugged PDB in a new stage; the caller commits the catalog row,
    then storage.publish()es the stage (and, in place, release_sources()).

    copy_datafiles: reflinked or copied files; the unplugged set stays intact.
    In place: the datafiles are hard-linked into the stage (nothing copied;
    the originals are unlinked only after the plug committed, so a crash
    before that leaves the unplugged set as it was); system.db alone is
    copied because giving the PDB its new id writes to it.
    Keeps the GUID (a plug is the same database, unlike a clone)."""
    from rustymt.engine import clone, crashpoint, recovery  # they import storage only; no cycle at import time
    step = crashpoint.steps("plug_copy" if copy_datafiles else "plug_in_place", pdb_name)
    stage = storage._new_stage(data_dir, f"plug-{pdb_id}")
    try:
        step("stage made")
        for entry in manifest["datafiles"]:
            source, target = os.path.join(datafiles_dir, entry["name"]), os.path.join(stage, entry["name"])
            try:
                if copy_datafiles:
                    clone.reflink(source, target)
                elif entry["name"] == storage.DICTIONARY_FILE:
                    shutil.copyfile(source, target)
                else:
                    os.link(source, target)
            except OSError:
                if os.path.exists(target):
                    os.unlink(target)
                shutil.copyfile(source, target)
            os.chmod(target, 0o600)
            step(f"staged {entry['name']}")
        clone.set_identity(stage, pdb_id, pdb_name, guid=manifest["guid"])
        step("identity set")
        if not copy_datafiles:  # what to unlink once published (recovery finishes it after a crash)
            recovery.write_release_list(stage, [os.path.join(os.path.abspath(datafiles_dir), entry["name"])
                                                for entry in manifest["datafiles"]], os.path.abspath(datafiles_dir))
            step("release list written")
        storage._fsync_tree(stage)
        step("staged")
    except BaseException:
        storage.discard(stage)
        raise
    return stage


def release_sources(folder: str) -> None:
    """After an in-place plug was published: the unplugged names go (the data lives on in the PDB)."""
    from rustymt.engine import recovery
    recovery.finish_release(folder)
