"""Pure parts: DateTime scalar, signed cursors, paging windows, cost/depth/alias measure."""
from __future__ import annotations

import pytest
from graphql import graphql_sync, parse

from rustymt.api.graphql import limits
from rustymt.api.graphql.cursors import CursorCodec
from rustymt.api.graphql.paging import window_of
from rustymt.api.graphql.scalars import parse_iso_utc, serialize_datetime
from rustymt.api.graphql.schema import executable_schema
from rustymt.service.errors import ServiceError


@pytest.mark.parametrize("text, expected", [
    ("2025-12-11T10:00:00Z", "2025-12-11T10:00:00Z"),
    ("2025-12-11T12:30:00+02:30", "2025-12-11T10:00:00Z"),
    ("2025-12-11T10:00:00.250Z", "2025-12-11T10:00:00.25Z"),
])
def test_datetime_normalises_to_utc(text, expected):
    assert serialize_datetime(text) == expected


@pytest.mark.parametrize("bad", ["2025-12-11T10:00:00", "2025-12-11", "yesterday", "2025-13-01T00:00:00Z", "", "2025-12-11T25:00:00Z"])
def test_datetime_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        parse_iso_utc(bad)
    query = '{ tenantMeteringRecords(tenantId: "t", startDate: "%s", endDate: "2026-01-01T00:00:00Z") { cpuSeconds } }' % bad
    result = graphql_sync(executable_schema(), query)
    assert result.errors and "DateTime" in result.errors[0].message


def test_cursor_round_trip_and_tamper_checks():
    codec = CursorCodec(b"k" * 32)
    filters = {"tier": "gold", "state": None}
    cursor = codec.encode("tenants", filters, 41)
    assert codec.decode(cursor, "tenants", filters) == 41
    body, tag = cursor.split(".")
    forged_body = CursorCodec(b"x" * 32).encode("tenants", filters, 0).split(".")[0]
    for bad in (forged_body + "." + tag, body + "." + tag[:-2] + "AA", "garbage", body):
        with pytest.raises(ServiceError) as refused:
            codec.decode(bad, "tenants", filters)
        assert refused.value.code == "INVALID_REQUEST"
    with pytest.raises(ServiceError):  # another list
        codec.decode(cursor, "pdbs", filters)
    with pytest.raises(ServiceError):  # other filters
        codec.decode(cursor, "tenants", {"tier": "silver", "state": None})
    with pytest.raises(ServiceError):  # another daemon's key
        CursorCodec(b"y" * 32).decode(cursor, "tenants", filters)


def test_windows():
    codec = CursorCodec(b"k" * 32)
    f = {}
    w = window_of({"page": 3, "pageSize": 10}, codec, "t", f)
    assert (w.offset, w.limit) == (20, 10)
    after = codec.encode("t", f, 9)
    assert window_of({"pageSize": 5, "after": after}, codec, "t", f).offset == 10
    before = codec.encode("t", f, 3)
    w = window_of({"pageSize": 5, "before": before}, codec, "t", f)
    assert (w.offset, w.limit) == (0, 3)
    for bad in ({"pageSize": 0}, {"pageSize": 101}, {"first": 500}, {"page": 0}, {"after": after, "before": before}):
        with pytest.raises(ServiceError):
            window_of(bad, codec, "t", f)


def measure(query: str, variables=None):
    document = parse(query)
    operation = limits.choose_operation(document, None)
    return limits.measure(executable_schema(), document, operation, variables)


def test_cost_counts_page_sizes_and_variables():
    small = measure("{ tenants(pageSize: 1) { edges { node { tenantId quota { cpuPercent } } } } }")
    large = measure("query($n: Int) { tenants(pageSize: $n) { edges { node { tenantId quota { cpuPercent } } } } }", {"n": 100})
    default = measure("{ tenants { edges { node { tenantId } } } }")
    assert large.cost > 50 * small.cost
    assert default.cost > measure("{ tenants(pageSize: 2) { edges { node { tenantId } } } }").cost
    assert large.depth == 5


def test_fragments_and_aliases_are_counted():
    query = """
      fragment T on Tenant { tenantId sla { violations { severity } } }
      { a: tenants(pageSize: 100) { edges { node { ...T } } }
        b: tenants(pageSize: 100) { edges { node { ...T } } } }
    """
    found = measure(query)
    assert found.aliases == 2
    assert found.depth == 6
    with pytest.raises(ServiceError) as refused:
        document = parse(query)
        limits.check(executable_schema(), document, limits.choose_operation(document, None), None,
                     limits.Limits(max_cost=1000))
    assert refused.value.details["limit"] == "cost"


def test_introspection_is_free():
    assert measure("{ __schema { types { name fields { name type { name ofType { name } } } } } }").cost == 0
