"""What tools and ORMs ask at connect or for introspection, answered over the
wire: schema-qualified pg_catalog functions, current_schema, string_agg and
the information_schema views tables / columns / schemata."""
from __future__ import annotations

import psycopg


def test_pg_catalog_functions_current_schema_and_string_agg(pg, db):
    with psycopg.connect(pg.dsn(db), autocommit=True) as conn:
        version, = conn.execute("select pg_catalog.version()").fetchone()  # SQLAlchemy's first query
        assert version.startswith("PostgreSQL ")
        assert conn.execute("select current_schema, current_schema(), pg_catalog.lower('AB')").fetchone() == \
            ("public", "public", "ab")
        conn.execute("create table tags (k integer, v text)")
        conn.execute("insert into tags values (1, 'a'), (1, 'b'), (2, 'c')")
        cursor = conn.execute("select k, string_agg(v, '|') from tags group by k order by k")
        assert [d.name for d in cursor.description] == ["k", "string_agg"]
        assert [(k, sorted(v.split("|"))) for k, v in cursor.fetchall()] == [(1, ["a", "b"]), (2, ["c"])]


def test_information_schema_tables_columns_schemata(pg, db):
    with psycopg.connect(pg.dsn(db), autocommit=True) as conn:
        conn.execute("create table people (id integer primary key, name varchar(40) not null, born date)")
        conn.execute("create view adults as select id, name from people")
        tables = conn.execute("select table_name, table_type from information_schema.tables "
                              "where table_schema = 'public' order by table_name").fetchall()
        assert tables == [("adults", "VIEW"), ("people", "BASE TABLE")]
        columns = conn.execute("select c.column_name, c.ordinal_position, c.is_nullable, c.data_type "
                               "from information_schema.columns c where c.table_name = %s order by 2",
                               ("people",)).fetchall()
        assert columns == [("id", 1, "NO", "integer"), ("name", 2, "NO", "varchar(40)"), ("born", 3, "YES", "date")]
        assert conn.execute("select count(*) from information_schema.columns where table_name = 'adults'").fetchone() == (2,)
        assert conn.execute("select schema_name from information_schema.schemata").fetchall() == [("public",)]
