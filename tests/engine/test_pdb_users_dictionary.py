"""rustymt.engine.pdb_users.execute on a real PDB folder and the instance's
OpenPdb dictionary cache, in-process: a change is seen at once even when
system.db's mtime and size do not show it (two writes within one tick of a
coarse file clock), and a refused statement leaves the dictionary as it was."""
from __future__ import annotations

import os

import pytest

from rustymt.engine import pdb_users, scram, storage
from rustymt.engine.pgwire import sqlfront
from rustymt.engine.pgwire.errors import PgError
from rustymt.engine.tenants import OpenPdb

ADMIN = "boss"


@pytest.fixture
def pdb(tmp_path):
    folder = storage.stage_pdb_from_seed(str(tmp_path), "p_users", "PDB_USERS", ADMIN, scram.make_verifier("boss pw"))
    return OpenPdb("p_users", None, "PDB_USERS", folder, "READ_WRITE")


def run(pdb, sql: str, user: str = ADMIN) -> list:
    (front,) = sqlfront.translate(sql, sqlfront.Context({}, "PDB_USERS", user, 1))
    return pdb_users.execute(pdb, user, front.value, False)


def test_a_change_is_seen_at_once_even_when_the_file_looks_unchanged(pdb):
    path = os.path.join(pdb.folder, storage.DICTIONARY_FILE)
    run(pdb, "CREATE USER kim PASSWORD 'first-pw'")
    assert scram.scram_verify_password("first-pw", pdb.dictionary()["users"]["kim"]["verifier"])
    before = os.stat(path)  # what the cache's stamp was taken from
    run(pdb, "ALTER USER kim PASSWORD 'other-pw'")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as if within the same clock tick
    after = os.stat(path)
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (before.st_mtime_ns, before.st_size, before.st_ino)
    assert scram.scram_verify_password("other-pw", pdb.dictionary()["users"]["kim"]["verifier"])
    run(pdb, "DROP USER kim")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert "kim" not in pdb.dictionary()["users"]


def test_a_refused_statement_changes_nothing(pdb):
    run(pdb, "CREATE USER kim PASSWORD 'kim-pw'")
    run(pdb, "CREATE USER lee PASSWORD 'lee-pw'")
    before = storage.read_dictionary(pdb.folder)["users"]
    refusals = [("DROP USER lee, kim, nobody", ADMIN, "42704"),   # the first two are not dropped either
                (f'DROP USER lee, "{ADMIN}"', ADMIN, "55006"),
                ("DROP USER lee", "kim", "42501"),
                ("ALTER USER lee PASSWORD 'x'", "nobody at all", "42501")]
    for sql, user, code in refusals:
        with pytest.raises(PgError) as raised:
            run(pdb, sql, user)
        assert raised.value.code == code, sql
    assert storage.read_dictionary(pdb.folder)["users"] == before
    assert run(pdb, "DROP USER IF EXISTS nobody, lee")[0].message == 'role "nobody" does not exist, skipping'
    assert set(storage.read_dictionary(pdb.folder)["users"]) == {ADMIN, "kim"}


def test_not_inside_a_transaction_block_and_not_in_a_read_only_pdb(pdb):
    (front,) = sqlfront.translate("CREATE USER kim PASSWORD 'kim-pw'", sqlfront.Context({}, "PDB_USERS", ADMIN, 1))
    with pytest.raises(PgError) as raised:
        pdb_users.execute(pdb, ADMIN, front.value, True)
    assert raised.value.code == "25001"
    pdb.mode = "READ_ONLY"
    with pytest.raises(PgError) as raised:
        pdb_users.execute(pdb, ADMIN, front.value, False)
    assert raised.value.code == "25006"
    assert set(storage.read_dictionary(pdb.folder)["users"]) == {ADMIN}
