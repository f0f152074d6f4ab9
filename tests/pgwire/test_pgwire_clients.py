"""Real PostgreSQL clients against a real rustymt server on loopback:
psql, psycopg 3, asyncpg and pgbench."""
import asyncio
import decimal
import subprocess

import asyncpg
import psycopg
import pytest

from tests.pgwire.conftest import PASSWORD

PSQL_SCRIPT = r"""
\set ON_ERROR_STOP 1
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id integer REFERENCES customers(id), amount numeric(10,2));
INSERT INTO customers VALUES (1, 'ada'), (2, 'grace'), (3, 'edsger');
INSERT INTO orders (customer_id, amount) VALUES (1, 10.50), (1, 4.25), (2, 99.99);
SELECT c.name, count(o.id) AS n, sum(o.amount) AS total
  FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
  GROUP BY c.name ORDER BY c.name;
UPDATE customers SET name = upper(name) WHERE id = 3;
DELETE FROM orders WHERE amount < 5;
SELECT name FROM customers WHERE id = 3;
SHOW server_version;
SELECT version();
"""


def test_psql_runs_a_script_create_insert_select_join(pg, db):
    result = subprocess.run(["psql", "-X", "-A", "-d", db, "-f", "-"], input=PSQL_SCRIPT, env=pg.env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "CREATE TABLE" in lines and "INSERT 0 3" in lines and "UPDATE 1" in lines and "DELETE 1" in lines
    assert "name|n|total" in lines
    assert "ada|2|14.75" in lines and "edsger|0|" in lines and "grace|1|99.99" in lines
    assert "EDSGER" in lines
    assert any(line.startswith("15.0") for line in lines)
    assert any(line.startswith("PostgreSQL 15.0") for line in lines)


def test_psql_reports_sql_errors_with_sqlstate(pg, db):
    result = subprocess.run(["psql", "-X", "-v", "VERBOSITY=verbose", "-d", db, "-c", "SELEC 1"], env=pg.env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "ERROR:  42601" in result.stderr


def test_psycopg_parameters_binary_ints_and_auto_prepare(pg, db):
    with psycopg.connect(pg.dsn(db), autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, qty integer, price double precision, "
                     "label text, blob bytea, ok boolean)")
        for i in range(10):
            conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s)",
                         (i, i * 3, i / 4, f"item-{i}", bytes([i, 0, 255]), i % 2 == 0))
        # Binary ints go as int2/int4/int8 in binary format; the server must decode them.
        row = conn.execute("SELECT id, qty, price, label, blob, ok FROM items WHERE id = %s", (7,)).fetchone()
        assert row == (7, 21, 1.75, "item-7", bytes([7, 0, 255]), False)
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT id, qty, price, label, blob, ok FROM items WHERE qty >= %s ORDER BY id", (24,))
            assert cur.fetchall() == [(8, 24, 2.0, "item-8", bytes([8, 0, 255]), True),
                                      (9, 27, 2.25, "item-9", bytes([9, 0, 255]), False)]
        # After prepare_threshold (5) runs psycopg prepares _pg3_N on the server.
        for _ in range(7):
            assert conn.execute("SELECT count(*) FROM items WHERE id < %s", (5,)).fetchone() == (5,)
        session = next(s for _, s in pg.server.sessions.values() if s.database == db)
        assert any(name.startswith("_pg3_") for name in session.statements)
        assert conn.execute("SELECT %s::text || 'x', %s + 1", ("a", 41)).fetchone() == ("ax", 42)


def test_psycopg_transactions_commit_and_rollback(pg, db):
    with psycopg.connect(pg.dsn(db)) as conn:      # autocommit off: psycopg sends BEGIN
        conn.execute("CREATE TABLE t (id integer PRIMARY KEY)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
        conn.execute("INSERT INTO t VALUES (2)")
        conn.commit()
        assert conn.execute("SELECT id FROM t").fetchall() == [(2,)]


def test_asyncpg_fetch_executemany_prepared_transactions_pool(pg, db):
    async def scenario():
        conn = await asyncpg.connect(host=pg.host, port=pg.port, user="alice", password=PASSWORD, database=db)
        await conn.execute("CREATE TABLE acct (id integer PRIMARY KEY, owner text, balance bigint, rate numeric, "
                           "ratio double precision)")
        await conn.executemany("INSERT INTO acct (id, owner, balance, rate, ratio) VALUES ($1, $2, $3, $4, $5)",
                               [(i, f"o{i}", i * 100, decimal.Decimal("1.5"), i / 2) for i in range(20)])
        rows = await conn.fetch("SELECT id, owner, balance, rate, ratio FROM acct WHERE id < $1 ORDER BY id", 3)
        assert [tuple(r) for r in rows] == [(0, "o0", 0, decimal.Decimal("1.5"), 0.0),
                                            (1, "o1", 100, decimal.Decimal("1.5"), 0.5),
                                            (2, "o2", 200, decimal.Decimal("1.5"), 1.0)]
        stmt = await conn.prepare("SELECT owner FROM acct WHERE balance >= $1 AND id <> $2 ORDER BY id")
        assert [r["owner"] for r in await stmt.fetch(1700, 18)] == ["o17", "o19"]
        assert await conn.fetchval("SELECT count(*) FROM acct") == 20
        try:
            async with conn.transaction():
                await conn.execute("UPDATE acct SET balance = balance - $1 WHERE id = $2", 50, 1)
                raise RuntimeError("roll it back")
        except RuntimeError:
            pass
        assert await conn.fetchval("SELECT balance FROM acct WHERE id = $1", 1) == 100
        async with conn.transaction():
            await conn.execute("UPDATE acct SET balance = balance + $1 WHERE id = $2", 5, 1)
        assert await conn.fetchval("SELECT balance FROM acct WHERE id = $1", 1) == 105
        # Cursor with a row limit -> PortalSuspended in between.
        async with conn.transaction():
            got = [r["id"] async for r in conn.cursor("SELECT id FROM acct ORDER BY id", prefetch=7)]
        assert got == list(range(20))
        await conn.close()
        pool = await asyncpg.create_pool(host=pg.host, port=pg.port, user="alice", password=PASSWORD,
                                         database=db, min_size=1, max_size=1)
        for n in range(3):  # each release sends the reset query string
            async with pool.acquire() as pooled:
                assert await pooled.fetchval("SELECT $1::int4 * 2", n) == n * 2
        await pool.close()

    asyncio.run(scenario())


PGBENCH_INIT = """
CREATE TABLE pgbench_accounts (aid integer PRIMARY KEY, bid integer, abalance integer, filler char(84));
CREATE TABLE pgbench_history (aid integer, delta integer, mtime timestamp);
INSERT INTO pgbench_accounts WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000)
  SELECT i, 1, 0, '' FROM s;
"""
PGBENCH_SCRIPT = r"""
\set aid random(1, 1000)
\set delta random(-50, 50)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid \gset
INSERT INTO pgbench_history (aid, delta, mtime) VALUES (:aid, :delta, CURRENT_TIMESTAMP);
END;
"""


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_script_in_each_protocol_mode(pg, db, tmp_path, mode):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", PGBENCH_INIT], env=pg.env(),
                   check=True, capture_output=True, timeout=60)
    script = tmp_path / "bench.sql"
    script.write_text(PGBENCH_SCRIPT)
    result = subprocess.run(["pgbench", "-n", "-f", str(script), "-M", mode, "-c", "4", "-t", "25", db],
                            env=pg.env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "number of transactions actually processed: 100/100" in result.stdout
    assert "number of failed transactions: 0" in result.stdout
    with psycopg.connect(pg.dsn(db)) as conn:
        assert conn.execute("SELECT count(*) FROM pgbench_history").fetchone() == (100,)
        total = conn.execute("SELECT sum(abalance) FROM pgbench_accounts").fetchone()[0]
        assert total == conn.execute("SELECT sum(delta) FROM pgbench_history").fetchone()[0]


def test_builtin_types_round_trip_in_binary_and_text(pg, db):
    import datetime
    import uuid
    moment = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)
    row = (moment, moment.replace(tzinfo=datetime.timezone.utc), moment.date(), uuid.UUID(int=5), True,
           decimal.Decimal("12.5"), b"\x00\x01", 7)

    async def binary():  # asyncpg: every parameter and result in binary
        conn = await asyncpg.connect(host=pg.host, port=pg.port, user="alice", password=PASSWORD, database=db)
        await conn.execute("CREATE TABLE ty (ts timestamp, tz timestamptz, d date, u uuid, b boolean, n numeric, "
                           "raw bytea, s smallint, j jsonb)")
        await conn.execute("INSERT INTO ty VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", *row, '{"a": 1}')
        got = await conn.fetchrow("SELECT ts, tz, d, u, b, n, raw, s, j FROM ty WHERE b = $1 AND s = $2", True, 7)
        await conn.close()
        return tuple(got)

    assert asyncio.run(binary()) == row + ('{"a": 1}',)
    with psycopg.connect(pg.dsn(db)) as conn:   # psycopg: text results
        assert conn.execute("SELECT ts, tz, d, u, b, n, raw, s, j FROM ty WHERE u = %s", (uuid.UUID(int=5),)).fetchone() \
            == row + ({"a": 1},)
