"""CREATE/ALTER/DROP USER|ROLE in the SQL front layer (rustymt.engine.pdb_users.parse)
and on a server whose Backend has no user dictionary (FileBackend: 0A000).
Running them on a PDB is tested against a real daemon in
tests/daemon_engine/test_pdb_users.py."""
from __future__ import annotations

import psycopg
import pytest

from rustymt.engine import scram
from rustymt.engine.pgwire import sqlfront
from rustymt.engine.pgwire.errors import PgError

SECRET = "Sekr3t-pw-4d1f"
CTX = sqlfront.Context({}, "db", "admin", 1)


def front(sql: str) -> sqlfront.FrontStatement:
    fronts = sqlfront.translate(sql, CTX)
    assert len(fronts) == 1
    return fronts[0]


@pytest.mark.parametrize("sql, tag, action, names", [
    (f"CREATE USER alice PASSWORD '{SECRET}'", "CREATE ROLE", "create", ("alice",)),
    (f"create user Alice with encrypted password '{SECRET}' login inherit", "CREATE ROLE", "create", ("alice",)),
    (f"CREATE ROLE \"Mixed Case\" WITH LOGIN PASSWORD '{SECRET}'", "CREATE ROLE", "create", ("Mixed Case",)),
    (f"ALTER ROLE \"admin@acme.example\" PASSWORD '{SECRET}'", "ALTER ROLE", "alter", ("admin@acme.example",)),
    (f"ALTER USER CURRENT_USER WITH PASSWORD '{SECRET}'", "ALTER ROLE", "alter", (None,)),
    ("DROP USER bob", "DROP ROLE", "drop", ("bob",)),
    ("DROP ROLE IF EXISTS a, \"B\", c##x;", "DROP ROLE", "drop", ("a", "B", "c##x")),
])
def test_user_statements_become_role_statements(sql, tag, action, names):
    stmt = front(sql)
    assert (stmt.kind, stmt.verb, stmt.value.action, stmt.value.names) == ("role", tag, action, names)
    assert stmt.source == tag and SECRET not in repr(stmt.value)  # the text is not kept
    if action != "drop":
        assert scram.scram_verify_password(SECRET, stmt.value.verifier)
    assert stmt.value.if_exists == ("IF EXISTS" in sql)


@pytest.mark.parametrize("literal, password", [
    ("'it''s'", "it's"), ("E'tab\\there'", "tab\there"), ("$$dollar$$", "dollar"), ("$q$a'b$q$", "a'b"),
])
def test_password_literals_are_read_as_postgresql_reads_them(literal, password):
    assert scram.scram_verify_password(password, front(f"ALTER USER x PASSWORD {literal}").value.verifier)


def test_a_client_computed_verifier_is_stored_as_sent():
    verifier = scram.make_verifier(SECRET)
    assert front(f"ALTER USER x PASSWORD '{verifier}'").value.verifier == verifier


@pytest.mark.parametrize("sql, code", [
    (f"CREATE ROLE r PASSWORD '{SECRET}'", "0A000"),           # no LOGIN: not a PDB user
    (f"ALTER ROLE r NOLOGIN PASSWORD '{SECRET}'", "0A000"),
    ("CREATE USER r", "0A000"),                                 # no password
    (f"CREATE USER r PASSWORD '{SECRET}' CREATEDB", "0A000"),
    (f"CREATE USER r PASSWORD '{SECRET}' VALID UNTIL 'infinity'", "0A000"),
    ("ALTER USER r PASSWORD NULL", "0A000"),
    ("ALTER USER r PASSWORD 'md5" + "0" * 32 + "'", "0A000"),
    ("ALTER USER r RENAME TO s", "0A000"),
    (f"CREATE USER r PASSWORD {SECRET}", "42601"),              # unquoted: never quoted back
    (f"CREATE USER r PASSWORD '{SECRET}' '{SECRET}'", "42601"),
    (f"CREATE USER r PASSWORD '{SECRET}' PASSWORD '{SECRET}'", "42601"),
    ("ALTER USER r PASSWORD $1", "42601"),
    ("DROP USER", "42601"),
    ("DROP USER a b", "42601"),
    (f"CREATE USER CURRENT_USER PASSWORD '{SECRET}'", "42939"),
    ("ALTER USER r PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$short:short'", "22023"),
    ("ALTER USER r PASSWORD ''", "22023"),
])
def test_refused_at_parse_time_without_quoting_the_password(sql, code):
    with pytest.raises(PgError) as raised:
        front(sql)
    error = raised.value
    assert error.code == code, error
    assert SECRET not in " ".join(filter(None, (error.message, error.detail, error.hint)))


def test_no_copy_of_the_statement_text_is_kept_by_the_shape_cache():
    front(f"ALTER USER keeper PASSWORD '{SECRET}'")
    assert not [shape for shape in sqlfront._SHAPE_VERDICTS if "Sekr" in shape]


def test_a_backend_without_user_dictionary_answers_0a000(pg, db):
    with psycopg.connect(pg.dsn(db), autocommit=True) as conn:
        for prepare in (False, True):  # simple, then extended protocol
            with pytest.raises(psycopg.errors.FeatureNotSupported) as raised:
                conn.execute(f"CREATE USER zoe PASSWORD '{SECRET}'", prepare=prepare)
            assert "CREATE ROLE is not supported" in str(raised.value) and SECRET not in str(raised.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
