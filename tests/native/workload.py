"""A deterministic SQLite workload (build, point selects, joins, scans,
updates, deletes, temp tables, vacuum) run statement by statement, shared by
the workload tests (against stdlib sqlite3 as the oracle) and the bench."""
from __future__ import annotations


def build(rows: int) -> list[str]:
    """Schema and data: customers, orders (rows of them), an index."""
    return [
        "CREATE TABLE customer(id INTEGER PRIMARY KEY, name TEXT NOT NULL, region INTEGER)",
        "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER, amount REAL, note TEXT, payload BLOB)",
        f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < {max(rows // 10, 10)}) "
        "INSERT INTO customer SELECT x, 'customer-' || x, x % 7 FROM c",
        f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < {rows}) "
        f"INSERT INTO orders SELECT x, (x * 7919) % {max(rows // 10, 10)} + 1, (x * 31 % 1000) / 10.0, "
        "printf('note %08d', x * 13 % 100003), zeroblob(x % 300) FROM c",
        "CREATE INDEX orders_customer ON orders(customer)",
    ]


def queries(rows: int) -> list[str]:
    """Reads and writes over the built data; every SELECT is ordered."""
    customers = max(rows // 10, 10)
    out = []
    for k in range(1, 60):
        key = (k * 104729) % rows + 1
        out.append(f"SELECT id, customer, amount, note, length(payload) FROM orders WHERE id = {key}")
    for k in range(1, 10):
        out.append(f"SELECT count(*), sum(amount) FROM orders WHERE customer = {(k * 37) % customers + 1}")
    out += [
        "SELECT c.region, count(*), round(sum(o.amount), 2) FROM orders o JOIN customer c ON c.id = o.customer "
        "GROUP BY c.region ORDER BY c.region",
        "SELECT count(*), round(avg(amount), 4), max(note), sum(length(payload)) FROM orders",
        "SELECT customer, count(*) AS n FROM orders GROUP BY customer ORDER BY n DESC, customer LIMIT 20",
        "UPDATE orders SET amount = amount * 1.5, note = note || '!' WHERE id % 11 = 0",
        "DELETE FROM orders WHERE id % 17 = 0",
        "CREATE TEMP TABLE hot AS SELECT customer, sum(amount) AS total FROM orders GROUP BY customer",
        "SELECT count(*), round(sum(total), 2) FROM hot",
        "SELECT h.customer, c.name, round(h.total, 2) FROM hot h JOIN customer c ON c.id = h.customer "
        "ORDER BY h.total DESC, h.customer LIMIT 10",
        "DROP TABLE hot",
        "BEGIN",
        f"INSERT INTO orders(customer, amount, note, payload) SELECT customer, amount / 2, note, payload FROM orders WHERE id % 5 = 0",
        "UPDATE customer SET name = upper(name) WHERE region = 3",
        "COMMIT",
        "SELECT count(*), round(sum(amount), 2) FROM orders",
        "SELECT region, count(*) FROM customer WHERE name LIKE 'CUSTOMER%' GROUP BY region ORDER BY region",
        "DELETE FROM orders WHERE amount > 50",
        "VACUUM",
        "SELECT count(*), round(sum(amount), 2), min(id), max(id) FROM orders",
        "SELECT id, note FROM orders ORDER BY note DESC, id LIMIT 15",
    ]
    return out


def script(rows: int) -> list[str]:
    return build(rows) + queries(rows)


def run_engine(conn, statements):
    """Run statements through the engine binding; list of row lists."""
    results = []
    for sql in statements:
        stmt, tail = conn.prepare(sql)
        assert not tail.strip(), sql
        rows = []
        while batch := stmt.fetchmany(256):
            rows.extend(batch)
        stmt.finalize()
        results.append(rows)
    return results


def run_stdlib(conn, statements):
    """The same through the stdlib sqlite3 module (the oracle)."""
    results = []
    for sql in statements:
        results.append([tuple(r) for r in conn.execute(sql).fetchall()])
    return results
