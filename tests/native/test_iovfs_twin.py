"""The VFS token bucket in C and its twin agree; the twin's meter obeys the
rate over long random sequences (so the oracle itself is checked)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from rustymt._native import _core
from rustymt._native.twins import iovfs as twin

NS = 1_000_000_000


@settings(max_examples=examples(300), deadline=None)
@given(
    rate=st.integers(0, 10**9),
    burst=st.integers(0, 10**6),
    steps=st.lists(st.tuples(st.integers(0, 70_000), st.integers(0, 50_000_000)), max_size=200),
)
def test_bucket_waits_agree(rate, burst, steps):
    c_bucket, py_bucket = _core.IoBucket(rate, burst), twin.IoBucket(rate, burst)
    now = 10**9
    for cost, gap in steps:
        now += gap
        assert c_bucket.admit(cost, now) == py_bucket.admit(cost, now)


@settings(max_examples=examples(50), deadline=None)
@given(iops=st.integers(10, 5000), sizes=st.lists(st.sampled_from([512, 4096, 65536]), min_size=200, max_size=400))
def test_twin_meter_holds_the_iops_rate(iops, sizes):
    meter = twin.TenantIo()
    meter.set_limits(iops, 0)
    now = 0
    for i, size in enumerate(sizes):
        now += meter.io(i % 3 == 0, size, now)  # the IO proceeds after its wait
    ops = meter.reads + meter.writes
    burst = max(iops // 20, 1)
    assert ops - burst <= iops * now / NS + 1
    assert meter.read_bytes + meter.write_bytes == sum(sizes)


IO_SLOT = 253  # a slot no other test uses (native-pool's tests use 200-252)


@settings(max_examples=examples(100), deadline=None)
@given(
    iops=st.integers(0, 5000),
    bytes_per_sec=st.integers(0, 50_000_000),
    ios=st.lists(st.tuples(st.booleans(), st.sampled_from([0, 512, 4096, 65536]), st.integers(0, 20_000_000)), max_size=300),
)
def test_vfs_meter_counts_and_waits_agree_with_the_twin(iops, bytes_per_sec, ios):
    """The C VFS's per-tenant accounting (what xRead/xWrite call before they
    sleep) and the twin's: same waits, same reads/writes/bytes/throttled_ns."""
    _core.iovfs_set_limits(IO_SLOT, iops, bytes_per_sec)
    _core.iovfs_reset_stats(IO_SLOT)
    meter = twin.TenantIo()
    meter.set_limits(iops, bytes_per_sec)
    now = 10**12
    try:
        for is_write, amount, gap in ios:
            now += gap
            assert _core.iovfs_account(IO_SLOT, is_write, amount, now) == meter.io(is_write, amount, now)
        stats = _core.iovfs_stats(IO_SLOT)
        assert {k: stats[k] for k in ("reads", "writes", "read_bytes", "write_bytes", "throttled_ns")} == {
            "reads": meter.reads, "writes": meter.writes, "read_bytes": meter.read_bytes,
            "write_bytes": meter.write_bytes, "throttled_ns": meter.throttled_ns}
    finally:
        _core.iovfs_set_limits(IO_SLOT, 0, 0)
        _core.iovfs_reset_stats(IO_SLOT)


def test_bad_input_is_refused():
    for cls in (_core.IoBucket, twin.IoBucket):
        with pytest.raises(ValueError):
            cls(-1, 0)
        with pytest.raises(ValueError):
            cls(10, 1).admit(-1, 0)
    with pytest.raises(ValueError):
        _core.iovfs_set_limits(1, -5, 0)
    with pytest.raises(ValueError):
        _core.iovfs_stats(_core.MAX_TENANTS)
