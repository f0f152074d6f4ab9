"""Property tests: random operation sequences against the C units (through the
test API) and their pure-Python twins must agree on every outcome and counter."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from rustymt._native import _core
from rustymt._native.twins.bufpool import Pool
from rustymt._native.twins.tenantmem import TenantMem

TENANTS = range(4)

pool_ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(TENANTS), st.sampled_from([True, True, True, False])),
        st.tuples(st.just("fetch"), st.integers(0, 7), st.integers(1, 24), st.sampled_from([0, 1, 2, 2])),
        st.tuples(st.just("fetch"), st.integers(0, 7), st.integers(1, 24), st.just(2)),
        st.tuples(st.just("unpin"), st.integers(0, 7), st.integers(0, 30), st.booleans()),
        st.tuples(st.just("unpin"), st.integers(0, 7), st.integers(0, 30), st.just(False)),
        st.tuples(st.just("rekey"), st.integers(0, 7), st.integers(0, 30), st.integers(1, 24)),
        st.tuples(st.just("truncate"), st.integers(0, 7), st.integers(0, 26)),
        st.tuples(st.just("shrink"), st.integers(0, 7)),
        st.tuples(st.just("destroy"), st.integers(0, 7)),
        st.tuples(st.just("partition"), st.sampled_from(TENANTS), st.integers(0, 4), st.integers(0, 8)),
        st.tuples(st.just("cachesize"), st.integers(0, 7), st.integers(-5, 12)),
    ),
    min_size=1,
    max_size=120,
)


def apply(pool, handles, op, twin):
    """Apply op to pool; page choices come from the twin's state so both see
    the same arguments. Returns the outcome to compare."""
    kind = op[0]
    if kind == "create":
        return handles.append(pool.create_cache(op[1], 1024, 16, op[2]))
    if kind == "partition":
        return pool.set_partition(op[1], op[2], op[3])
    if not handles:
        return None
    h = handles[op[1] % len(handles)]
    if kind == "fetch":
        return pool.fetch(h, op[2], op[3])
    if kind in ("unpin", "rekey"):
        cache = twin.caches[h]
        keys = sorted(k for k, f in cache.pages.items() if f.pinned or kind == "rekey")
        if not keys:
            return None
        key = keys[op[2] % len(keys)]
        if kind == "unpin":
            return pool.unpin(h, key, op[3])
        if op[3] == key:
            return None
        return pool.rekey(h, key, op[3])
    if kind == "truncate":
        return pool.truncate(h, op[2])
    if kind == "shrink":
        return pool.shrink(h)
    if kind == "destroy":
        handles.remove(h)
        return pool.destroy(h)
    if kind == "cachesize":
        return pool.set_cache_size(h, op[2])
    raise AssertionError(kind)


@settings(max_examples=examples(150), deadline=None)
@given(nframes=st.integers(2, 12), ops=pool_ops)
def test_bufpool_c_and_twin_agree(nframes, ops):
    c_pool, twin = _core.TestPool(nframes), Pool(nframes)
    c_handles, t_handles = [], []
    for op in ops:
        # Snapshot the twin's choice inputs before either side mutates.
        got = apply(c_pool, c_handles, op, twin)
        want = apply(twin, t_handles, op, twin)
        assert got == want, op
        assert c_handles == t_handles
        for t in TENANTS:
            assert c_pool.stats(t) == twin.stats(t), (op, t)
        c_info = c_pool.info()
        c_info.pop("frame_bytes")
        assert c_info == twin.info(), op
        for h in t_handles:
            assert c_pool.pagecount(h) == twin.pagecount(h)
            for key in range(0, 26):
                assert c_pool.is_pinned(h, key) == twin.is_pinned(h, key), (op, h, key)
        assert c_pool.check()
    # Partition invariants the design promises, checked on the twin's state.
    for t in TENANTS:
        s = twin.stats(t)
        assert s["pinned"] <= s["resident"]


@settings(max_examples=examples(60), deadline=None)
@given(nframes=st.integers(4, 16), data=st.data())
def test_a_tenant_under_its_min_never_loses_frames_to_others(nframes, data):
    """Tenant 1 fills its min, then tenant 2 churns through many pages: tenant 1
    keeps every frame up to its min."""
    pool = _core.TestPool(nframes)
    protected = data.draw(st.integers(1, nframes - 1))
    assert pool.set_partition(1, protected, 0)
    a = pool.create_cache(1)
    for key in range(1, protected + 1):
        assert pool.fetch(a, key, 2) == "created"
        pool.unpin(a, key)
    b = pool.create_cache(2)
    for key in data.draw(st.lists(st.integers(1, 200), min_size=1, max_size=100)):
        if pool.fetch(b, key, 2) is not None:
            pool.unpin(b, key)
    assert pool.stats(1)["resident"] == protected
    assert pool.stats(1)["evictions"] == 0
    for key in range(1, protected + 1):
        assert pool.fetch(a, key, 0) == "hit"


def test_a_tenant_at_its_max_recycles_only_its_own_pages():
    pool = _core.TestPool(10)
    assert pool.set_partition(1, 0, 3)
    other = pool.create_cache(2)
    for key in range(1, 5):
        pool.fetch(other, key, 2)
        pool.unpin(other, key)
    mine = pool.create_cache(1)
    for key in range(1, 50):
        assert pool.fetch(mine, key, 2) == "created"
        pool.unpin(mine, key)
    assert pool.stats(1)["resident"] == 3
    assert pool.stats(2)["resident"] == 4 and pool.stats(2)["evictions"] == 0
    # createFlag 1 at the max with everything pinned asks SQLite to spill;
    # createFlag 2 overdraws instead of failing the statement.
    for key in range(100, 103):
        pool.fetch(mine, key, 2)
    assert pool.fetch(mine, 200, 1) is None
    assert pool.fetch(mine, 200, 2) == "created"
    assert pool.stats(1)["resident"] == 4
    pool.unpin(mine, 200)  # the overdraft is shed when unpinned
    assert pool.stats(1)["resident"] == 3
    assert pool.check()


def test_truncate_keeps_lower_keys_and_drops_pinned_higher_ones():
    pool = _core.TestPool(8)
    c = pool.create_cache(0)
    for key in (1, 2, 3, 7):
        pool.fetch(c, key, 2)
    pool.unpin(c, 2)
    pool.truncate(c, 3)
    assert [pool.is_pinned(c, k) for k in (1, 2, 3, 7)] == [True, False, None, None]
    pool.truncate(c, 100)  # nothing above: a no-op
    assert pool.pagecount(c) == 2
    assert pool.check()


mem_ops = st.lists(
    st.one_of(
        st.tuples(st.just("malloc"), st.sampled_from([250, 251, 252]), st.integers(-1, 5000)),
        st.tuples(st.just("free"), st.integers(0, 50)),
        st.tuples(st.just("realloc"), st.integers(0, 50), st.integers(-1, 6000)),
        st.tuples(st.just("charge"), st.sampled_from([250, 251, 252]), st.integers(0, 8192)),
        st.tuples(st.just("quota"), st.sampled_from([250, 251, 252]), st.sampled_from([0, 2000, 8000, 20000])),
    ),
    max_size=80,
)


@settings(max_examples=examples(150), deadline=None)
@given(ops=mem_ops)
def test_tenantmem_c_and_twin_agree(ops):
    slots = (250, 251, 252)
    for s in slots:
        _core.set_memory_quota(s, 0)
        assert _core.memory_stats(s)["allocated_bytes"] == 0
        _core.reset_tenant_stats(s)
    twin = TenantMem()
    live = []  # (c address, twin handle)
    charged = []  # (slot, bytes)
    try:
        for op in ops:
            if op[0] == "malloc":
                address, handle = _core._mem_malloc(op[1], op[2]), twin.malloc(op[1], op[2])
                assert (address != 0) == (handle is not None)
                if handle is not None:
                    assert _core._mem_size(address) == op[2] and _core._mem_owner(address) == op[1]
                    assert address % 8 == 0
                    live.append((address, handle))
            elif op[0] in ("free", "realloc") and live:
                i = op[1] % len(live)
                address, handle = live[i]
                if op[0] == "free":
                    _core._mem_free(address)
                    twin.free(handle)
                    live.pop(i)
                else:
                    moved, same = _core._mem_realloc(address, op[2]), twin.realloc(handle, op[2])
                    assert (moved != 0) == (same is not None)
                    if moved:
                        live[i] = (moved, handle)
                        assert _core._mem_size(moved) == op[2]
            elif op[0] == "charge":
                ok = _core._mem_charge(op[1], op[2])
                assert ok == twin.charge(op[1], op[2])
                if ok:
                    charged.append((op[1], op[2]))
            elif op[0] == "quota":
                _core.set_memory_quota(op[1], op[2])
                twin.set_quota(op[1], op[2])
            for s in slots:
                assert _core.memory_stats(s) == twin.stats(s), op
    finally:
        for address, _ in live:
            _core._mem_free(address)
        for s, n in charged:
            _core._mem_uncharge(s, n)
        for s in slots:
            _core.set_memory_quota(s, 0)
    for s in slots:
        assert _core.memory_stats(s)["allocated_bytes"] == 0
