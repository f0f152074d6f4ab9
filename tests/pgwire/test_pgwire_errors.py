"""Errors on the wire, as real clients see them: the SQLSTATE must be PostgreSQL's."""
import asyncio
import os
import subprocess
import threading

import asyncpg
import psycopg
import pytest
from psycopg import errors

from tests.pgwire.conftest import PASSWORD
from tests.conftest import wait_for

FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def test_bad_password_is_28p01(pg, db):
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(pg.dsn(db, password="wrong"))
    assert 'password authentication failed for user "alice"' in str(info.value)

    async def attempt():
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(host=pg.host, port=pg.port, user="alice", password="wrong", database=db)
        with pytest.raises(asyncpg.InvalidPasswordError):  # unknown user: same answer
            await asyncpg.connect(host=pg.host, port=pg.port, user="mallory", password="x", database=db)
    asyncio.run(attempt())


def test_unknown_database_is_3d000(pg):
    async def attempt():
        with pytest.raises(asyncpg.InvalidCatalogNameError):
            await asyncpg.connect(host=pg.host, port=pg.port, user="alice", password=PASSWORD, database="nosuchdb")
    asyncio.run(attempt())


def test_sql_errors_map_to_postgresql_sqlstates(pg, db):
    with psycopg.connect(pg.dsn(db), autocommit=True) as conn:
        conn.execute("CREATE TABLE u (id integer PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO u VALUES (1, 'a')")
        cases = [
            ("SELEC 1", None, errors.SyntaxError),
            ("SELECT * FROM missing", None, errors.UndefinedTable),
            ("SELECT nope FROM u", None, errors.UndefinedColumn),
            ("INSERT INTO u VALUES (%s, %s)", (1, "dup"), errors.UniqueViolation),
            ("INSERT INTO u VALUES (%s, %s)", (2, None), errors.NotNullViolation),
            ("CREATE TABLE u (x int)", None, errors.DuplicateTable),
            ("SHOW no_such_setting", None, errors.UndefinedObject),
        ]
        for sql, params, expected in cases:
            with pytest.raises(expected) as info:
                conn.execute(sql, params)
            assert info.value.diag.severity == "ERROR" and info.value.diag.message_primary
        with pytest.raises(errors.SyntaxError) as info:
            conn.execute("SELECT 1 FROM u WHERE id = 1 garbage")
        assert info.value.diag.statement_position == "30"  # ErrorResponse P: where "garbage" starts
        # The session is still usable after errors.
        assert conn.execute("SELECT count(*) FROM u").fetchone() == (1,)


def test_failed_transaction_block_is_25p02_until_rollback(pg, db):
    with psycopg.connect(pg.dsn(db)) as conn:
        conn.execute("CREATE TABLE f (id integer PRIMARY KEY)")
        conn.commit()
        conn.execute("INSERT INTO f VALUES (1)")
        with pytest.raises(errors.UniqueViolation):
            conn.execute("INSERT INTO f VALUES (1)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM f").fetchone() == (0,)


def test_read_only_database_write_is_25006(pg):
    with psycopg.connect(pg.dsn("ro"), autocommit=True) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        with pytest.raises(errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE x (id int)")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_tenant_memory_quota_is_53200_and_the_session_survives(pg):
    from rustymt._native import _core

    from tests.pgwire.conftest import QUOTA_SLOT
    if not os.path.exists(pg.backend.path_of("quota")):
        pg.backend.create_database("quota")
    with psycopg.connect(pg.dsn("quota"), autocommit=True) as conn:
        _core.set_memory_quota(QUOTA_SLOT, 8 << 20)
        try:
            with pytest.raises(errors.OutOfMemory) as info:
                conn.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100000) "
                             "SELECT length(group_concat(randomblob(1000))) FROM s")
            assert info.value.sqlstate == "53200"
            assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            _core.set_memory_quota(QUOTA_SLOT, 0)


def test_cancel_request_interrupts_the_running_statement_57014(pg, db):
    with psycopg.connect(pg.dsn(db), autocommit=True) as conn:
        session = next(s for _, s in pg.server.sessions.values() if s.database == db)
        outcome = {}

        def run():
            try:
                conn.execute(FOREVER)
            except psycopg.Error as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        wait_for(lambda: session.running, timeout=10, what="the long statement to start")
        conn.cancel_safe(timeout=10)  # non-blocking libpq cancel: the server shares this process
        worker.join(30)
        assert isinstance(outcome.get("error"), errors.QueryCanceled)
        assert outcome["error"].sqlstate == "57014"
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_cancel_with_wrong_secret_does_nothing(pg, db):
    import socket

    from tests.pgwire.pgwire_client import cancel_request
    with psycopg.connect(pg.dsn(db), autocommit=True) as conn:
        pid = conn.info.backend_pid
        secret, session = pg.server.sessions[pid]
        with socket.create_connection((pg.host, pg.port)) as sock:
            sock.sendall(cancel_request(pid, (secret + 1) & 0xFFFFFFFF))
            assert sock.recv(10) == b""  # closed without a reply
        assert not session.cancel_requested
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_psql_without_password_gets_a_clean_auth_failure(pg, db):
    env = pg.env(password="")
    env.pop("PGPASSWORD")
    result = subprocess.run(["psql", "-X", "-w", "-d", db, "-c", "SELECT 1"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "password" in result.stderr
