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
