"""The SQL front layer and the codecs, without a server."""
import datetime
import decimal
import struct

import pytest

from rustymt.engine.pgwire import codecs as C
from rustymt.engine.pgwire import sqlfront as F
from rustymt.engine.pgwire.errors import PgError, sqlstate_for_sqlite

COLUMNS = {"t": {"id": C.INT4, "name": C.TEXT, "v": C.FLOAT8, "big": C.INT8}}
CTX = F.Context({"server_version": "15.0", "TimeZone": "UTC", "timezone": "UTC"}, "appdb", "alice", 4242,
                lambda table: COLUMNS.get(table, {}))


def one(sql):
    (stmt,) = F.translate(sql, CTX)
    return stmt


def test_multi_statement_strings_split_outside_quotes_and_comments():
    stmts = F.translate("select 1; select 'a;b'; -- x;y\n select \"c;d\" from t; /* ; */", CTX)
    assert [s.sql for s in stmts] == ["select 1", "select 'a;b'", 'select "c;d" from t']
    assert F.translate("  ;; -- only a comment", CTX) == []


def test_trigger_bodies_are_not_split():
    (stmt,) = F.translate("CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET v = 1; END", CTX)
    assert stmt.verb == "CREATE TRIGGER" and "SET v = 1; END" in stmt.sql


def test_dollar_params_become_numbered_sqlite_params_with_inferred_types():
    stmt = one("SELECT * FROM t WHERE id = $1 AND $2 < v AND name LIKE $3 LIMIT $4")
    assert stmt.sql == "SELECT * FROM t WHERE id = ?1 AND ?2 < v AND name LIKE ?3 LIMIT ?4"
    assert stmt.param_hints == {1: C.INT4, 2: C.FLOAT8, 3: C.TEXT, 4: C.INT8}
    assert one("INSERT INTO t (big, name) VALUES ($1, $2)").param_hints == {1: C.INT8, 2: C.TEXT}
    assert one("INSERT INTO t VALUES ($1, $2, $3, $4)").param_hints == {1: C.INT4, 2: C.TEXT, 3: C.FLOAT8, 4: C.INT8}
    assert one("UPDATE t SET v = v + $1 WHERE id IN ($2, $3)").param_hints == {1: C.FLOAT8, 2: C.INT4, 3: C.INT4}
    assert one("SELECT $1::int8").param_hints == {1: C.INT8}


def test_casts_literals_and_pg_functions():
    stmt = one("SELECT '5'::int4, $1::text, 'true'::boolean, '2024-01-02'::date, version(), "
               "current_setting('TimeZone'), current_database(), pg_backend_pid(), E'a\\tb', $$it's$$")
    assert stmt.sql.startswith("SELECT CAST('5' AS INTEGER), CAST(?1 AS TEXT), 1, CAST('2024-01-02' AS TEXT), 'PostgreSQL 15.0")
    assert stmt.sql.endswith("'UTC', 'appdb', 4242, 'a\tb', 'it''s'")
    assert stmt.result_hints[:4] == [C.INT4, C.TEXT, C.BOOL, C.DATE]
    assert stmt.result_names[:5] == ["int4", "text", "bool", "date", "version"]


def test_star_select_lists_leave_names_and_types_to_sqlite():
    # "*" expands to columns only SQLite knows: positional names would land on the wrong ones
    for sql in ("SELECT * FROM v", "SELECT v.*, 3 FROM v", "SELECT *, 1 + 1 FROM v"):
        stmt = one(sql)
        assert stmt.result_names == [] and stmt.result_hints == [], sql
    assert one("SELECT a * 2 FROM v").result_names == ["?column?"]  # multiplication is not a star
    assert one("SELECT count(*) FROM v").result_names == ["count"]


def test_session_commands_and_command_verbs():
    assert [s.kind for s in F.translate("BEGIN; START TRANSACTION ISOLATION LEVEL SERIALIZABLE; COMMIT; END; "
                                        "ROLLBACK; ABORT", CTX)] == ["begin", "begin", "commit", "commit",
                                                                     "rollback", "rollback"]
    reset = F.translate("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;", CTX)
    assert [(s.kind, s.verb) for s in reset] == [("sql", "SELECT"), ("noop", "CLOSE CURSOR ALL"),
                                                  ("noop", "UNLISTEN"), ("reset", "RESET")]
    setting = one("SET application_name TO 'x y'")
    assert (setting.kind, setting.setting, setting.value) == ("set", "application_name", "x y")
    assert one("SET TIME ZONE 'UTC'").setting == "timezone"
    assert one("SET TRANSACTION READ ONLY").kind == "noop"
    assert (one("SHOW TimeZone").kind, one("SHOW TimeZone").setting) == ("show", "timezone")
    assert (one("DEALLOCATE _pg3_1").kind, one("DEALLOCATE _pg3_1").setting) == ("deallocate", "_pg3_1")
    assert one("DEALLOCATE ALL").verb == "DEALLOCATE ALL"
    assert [one(q).verb for q in ("create unique index i on t(id)", "CREATE TEMP TABLE x (a int)", "drop table t",
                                  "insert into t values (1)", "with a as (select 1) delete from t",
                                  "TRUNCATE TABLE t")] == \
        ["CREATE INDEX", "CREATE TABLE", "DROP TABLE", "INSERT", "DELETE", "TRUNCATE TABLE"]
    assert one("TRUNCATE TABLE t").sql == "DELETE FROM t"
    assert one("create table s (id serial primary key)").sql == "create table s(id INTEGER primary key)"


def test_decltype_mapping():
    assert [C.oid_for_decltype(d) for d in ("INTEGER", "bigint", "varchar(20)", "character varying(3)",
                                            "double precision", "timestamp with time zone", "numeric(10,2)",
                                            "BLOB", "boolean", None, "weird_int_type")] == \
        [C.INT4, C.INT8, C.VARCHAR, C.VARCHAR, C.FLOAT8, C.TIMESTAMPTZ, C.NUMERIC, C.BYTEA, C.BOOL, None, C.INT8]


@pytest.mark.parametrize("value", ["0", "1", "-1", "123.45", "0.001", "10000", "12345678.9", "1e10", "0.00012",
                                   "-0.5", "0.00", "99999999999999999999.123456789"])
def test_numeric_binary_roundtrip(value):
    number = decimal.Decimal(value)
    assert C.decode_numeric_binary(C.encode_numeric_binary(number)) == number


def test_binary_and_text_encoders_convert_sqlite_values():
    assert C.encoder(C.INT4, 1)(7) == struct.pack("!i", 7)
    assert C.encoder(C.INT8, 1)("42") == struct.pack("!q", 42)
    assert C.encoder(C.FLOAT8, 0)(2.0) == b"2" and C.encoder(C.FLOAT8, 0)(float("inf")) == b"Infinity"
    assert C.encoder(C.BOOL, 0)(1) == b"t" and C.encoder(C.BOOL, 1)(0) == b"\x00"
    assert C.encoder(C.BYTEA, 0)(b"\x01\xff") == b"\\x01ff"
    assert C.encoder(C.DATE, 1)("2000-01-02") == struct.pack("!i", 1)
    assert C.encoder(C.TIMESTAMP, 1)("2000-01-01 00:00:01.5") == struct.pack("!q", 1_500_000)
    with pytest.raises(PgError) as info:
        C.encoder(C.INT4, 1)(1 << 40)
    assert info.value.code == "22003"
    with pytest.raises(PgError) as info:
        C.encoder(C.INT4, 1)("abc")
    assert info.value.code == "22P02"


def test_parameter_decoding():
    assert C.decode_param(struct.pack("!q", -5), C.INT8, 1) == -5
    assert C.decode_param(b"12", C.INT4, 0) == 12
    assert C.decode_param(b"t", C.BOOL, 0) == 1
    assert C.decode_param(b"\\x00ff", C.BYTEA, 0) == b"\x00\xff"
    assert C.decode_param(struct.pack("!i", 366), C.DATE, 1) == "2001-01-01"
    assert C.decode_param(None, C.INT4, 1) is None
    micros = int((datetime.datetime(2024, 5, 6, 7, 8, 9) - datetime.datetime(2000, 1, 1)).total_seconds() * 1e6)
    assert C.decode_param(struct.pack("!q", micros), C.TIMESTAMP, 1) == "2024-05-06 07:08:09"
    with pytest.raises(PgError) as info:
        C.decode_param(b"x", C.INT4, 1)
    assert info.value.code == "22P03"


def test_sqlite_errors_map_to_sqlstates():
    assert sqlstate_for_sqlite(19, 2067, "UNIQUE constraint failed: t.id") == "23505"
    assert sqlstate_for_sqlite(19, 1555, "UNIQUE constraint failed: t.id") == "23505"
    assert sqlstate_for_sqlite(19, 1299, "NOT NULL constraint failed: t.x") == "23502"
    assert sqlstate_for_sqlite(19, 787, "FOREIGN KEY constraint failed") == "23503"
    assert sqlstate_for_sqlite(1, 1, "no such table: x") == "42P01"
    assert sqlstate_for_sqlite(1, 1, 'near "SELEC": syntax error') == "42601"
    assert sqlstate_for_sqlite(8, 8, "attempt to write a readonly database") == "25006"
    assert sqlstate_for_sqlite(7, 7, "out of memory") == "53200"
    assert sqlstate_for_sqlite(13, 13, "database or disk is full") == "53100"
    assert sqlstate_for_sqlite(5, 517, "database is locked") == "40001"
    assert sqlstate_for_sqlite(9, 9, "interrupted") == "57014"


@pytest.mark.parametrize("sql", ["SELECT abalance FROM pgbench_accounts WHERE aid = 5;",
                                 "select t.id, name from t where v > 1.5 order by id",
                                 "UPDATE t SET v = v + -3 WHERE id = 5",
                                 "INSERT INTO t (id, name) VALUES (1, 'x') ON CONFLICT DO NOTHING",
                                 "DELETE FROM t WHERE id = 2"])
def test_plain_statement_shortcut_matches_the_full_translation(sql):
    fast = F.plain_statement(sql)
    assert fast is not None
    (full,) = [F.translate_one(tokens, CTX) for tokens in F.split_statements(sql)]
    assert (fast.kind, fast.verb, fast.returns_rows, fast.param_count) == \
        (full.kind, full.verb, full.returns_rows, full.param_count)
    assert all(hint is None for hint in full.result_hints) and all(name is None for name in full.result_names)
    assert "".join(fast.sql.split()) == "".join(full.sql.split())  # same text up to whitespace


@pytest.mark.parametrize("sql", ["select 1", "select count(*) from t", "select a from t; select b from t",
                                 "select now() from t", "update t set x = $1", "SELECT x::int FROM t",
                                 "UPDATE t SET name = current_user", "with a as (select 1) select * from a"])
def test_plain_statement_shortcut_declines_what_needs_translation(sql):
    assert F.plain_statement(sql) is None


@pytest.mark.parametrize("sql", ["SELECT abalance FROM pgbench_accounts WHERE aid = 5;", "select 1",
                                 "select a from t2 where x = 10", "CREATE TABLE t (id serial4)",
                                 "UPDATE t SET v = v + -3.25 WHERE id = 5", "select x from t where y = $1",
                                 "insert into t values (7, 'a 1'); select 2"])
def test_plain_statement_verdict_cache_agrees_with_the_patterns(sql):
    # The verdict is cached by shape (numbers replaced): the cached answer,
    # for this text and for the same text with other numbers, is the direct one.
    for variant in (sql, sql.replace("5", "123"), sql.replace("1", "98")):
        direct = F._plain_verb(variant)
        for _ in range(2):  # first computes, second hits the cache
            fast = F.plain_statement(variant)
            assert (fast.verb if fast else None) == direct
            if fast:
                assert fast.sql == variant.strip().rstrip(";").rstrip() and fast.returns_rows == (direct == "SELECT")
