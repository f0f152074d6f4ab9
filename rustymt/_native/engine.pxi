# install() of the native hooks into the engine's SQLite copy, the start-up
# canary and the tenant slot functions (partitions, quotas, stats).
from libc.stdint cimport int64_t, uint32_t
from rustymt._native.csqlite cimport *
from rustymt._native.native cimport *

MAX_TENANTS = RMT_MAX_TENANTS
DEFAULT_POOL_FRAMES = 4096

# None: SQLite not initialized yet; "hooks": initialized by install();
# "plain": initialized without hooks (benchmark baseline only).
_state = None
_settings = None
cdef rmt_pool *_pool = NULL


def _check_slot(int slot):
    if not 0 <= slot < RMT_MAX_TENANTS:
        raise ValueError(f"tenant slot {slot} out of range 0..{RMT_MAX_TENANTS - 1}")


def install(*, int pool_frames=DEFAULT_POOL_FRAMES):
    """Install the page pool and the tenant allocator into the engine's SQLite.

    Must run before SQLite's first initialization in this process (the first
    Connection does it with the defaults when nobody called install()). Returns
    True when it installed, False when the hooks were already installed
    (idempotent). Raises RuntimeError when SQLite was initialized without them.
    """
    global _state, _settings, _pool
    if _state == "hooks":
        return False
    if _state == "plain":
        raise RuntimeError("the engine's SQLite was initialized without the native hooks; install() must come first")
    if pool_frames <= 0:
        raise ValueError("pool_frames must be positive")
    cdef rmt_pool *pool = rmt_pool_new(pool_frames)
    if pool == NULL:
        raise MemoryError("cannot allocate the page pool")
    cdef int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, <int>0)
    if rc == SQLITE_OK:
        rc = sqlite3_config(SQLITE_CONFIG_MALLOC, rmt_tenantmem_methods())
    if rc == SQLITE_OK:
        rc = sqlite3_config(SQLITE_CONFIG_PCACHE2, rmt_bufpool_methods(pool))
    if rc != SQLITE_OK:
        rmt_pool_free(pool)
        raise RuntimeError(f"sqlite3_config failed ({rc}): SQLite was already initialized in this process")
    rmt_pool_set_accounting(pool, rmt_mem_charge, rmt_mem_uncharge)
    rc = sqlite3_initialize()
    if rc != SQLITE_OK:
        raise RuntimeError(f"sqlite3_initialize failed ({rc})")
    _iovfs_register()  # the "rustymt" VFS (iovfs.pxi); needs the initialized library
    _pool = pool
    _state = "hooks"
    _settings = {"pool_frames": pool_frames}
    return True


def initialize_without_hooks():
    """Initialize the engine's SQLite with its stock page cache and malloc.

    Only for benchmark baselines run in their own process: afterwards install()
    raises and no tenant accounting happens.
    """
    global _state
    if _state is not None:
        raise RuntimeError(f"the engine's SQLite is already initialized ({_state})")
    cdef int rc = sqlite3_initialize()
    if rc != SQLITE_OK:
        raise RuntimeError(f"sqlite3_initialize failed ({rc})")
    _state = "plain"


def hooks_installed():
    """True when install() put the pool and the allocator in place."""
    return _state == "hooks"


def settings():
    """The settings install() used (None before install)."""
    return dict(_settings) if _settings else None


cdef rmt_pool *_require_pool() except NULL:
    if _state != "hooks":
        raise RuntimeError("native hooks not installed: call _core.install() first")
    return _pool


def canary():
    """Prove that the engine's connections go through the pool and allocator.

    Opens an in-memory database through the binding, runs a statement, and
    checks that the pool's xCreate counter and the system slot's allocation
    counter moved. Returns the deltas; raises RuntimeError otherwise.
    """
    cdef rmt_pool *pool = _require_pool()
    cdef rmt_pool_info before, after
    cdef rmt_mem_stats mem_before, mem_after
    rmt_pool_get_info(pool, &before)
    rmt_mem_get_stats(0, &mem_before)
    conn = Connection(":memory:", tenant=0)
    try:
        stmt, _ = conn.prepare("CREATE TABLE canary(x); ")
        stmt.step()
        stmt.finalize()
    finally:
        conn.close()
    rmt_pool_get_info(pool, &after)
    rmt_mem_get_stats(0, &mem_after)
    result = {
        "caches_created": after.caches_created - before.caches_created,
        "allocations": mem_after.allocation_count - mem_before.allocation_count,
    }
    if result["caches_created"] <= 0 or result["allocations"] <= 0:
        raise RuntimeError(f"engine connections bypass the native hooks: {result}")
    return result


def set_partition(int slot, uint32_t min_frames, uint32_t max_frames):
    """Set a tenant's pool partition live (max_frames 0 = the whole pool)."""
    _check_slot(slot)
    if max_frames != 0 and min_frames > max_frames:
        raise ValueError("min_frames must not exceed max_frames")
    rmt_pool_set_partition(_require_pool(), slot, min_frames, max_frames)


cdef dict _pool_stats_dict(rmt_pool *pool, int slot):
    cdef rmt_pool_tenant_stats s
    rmt_pool_get_stats(pool, slot, &s)
    lookups = s.hits + s.misses
    return {
        "hits": s.hits, "misses": s.misses, "evictions": s.evictions,
        "resident": s.resident, "pinned": s.pinned,
        "min": s.min_frames, "max": s.max_frames,
        "hit_ratio": (s.hits / lookups) if lookups else 0.0,
        "unpooled": s.unpooled, "fetch_failures": s.fetch_failures, "caches": s.caches,
    }


cdef dict _pool_info_dict(rmt_pool *pool):
    cdef rmt_pool_info i
    rmt_pool_get_info(pool, &i)
    return {
        "frames": i.nframes, "free": i.nfree, "pinned": i.npinned,
        "caches_created": i.caches_created, "caches_live": i.caches_live,
        "frame_bytes": i.frame_bytes,
    }


def pool_stats(int slot):
    """A tenant's pool figures: hits, misses, evictions, resident, pinned, min,
    max, hit_ratio (plus unpooled, fetch_failures, caches)."""
    _check_slot(slot)
    return _pool_stats_dict(_require_pool(), slot)


def pool_info():
    """Pool-wide figures: frames, free, pinned, caches_created, caches_live, frame_bytes."""
    return _pool_info_dict(_require_pool())


def pool_check():
    """Walk the installed pool and verify its invariants (True when they hold)."""
    return bool(rmt_pool_check(_require_pool()))


def set_memory_quota(int slot, int64_t quota_bytes):
    """Set a tenant's hard memory quota in bytes (0 = unlimited)."""
    _check_slot(slot)
    if slot == 0 and quota_bytes != 0:
        raise ValueError("slot 0 (system) cannot have a quota")
    if quota_bytes < 0:
        raise ValueError("quota_bytes must be >= 0")
    rmt_mem_set_quota(slot, quota_bytes)


def memory_stats(int slot):
    """A tenant's memory figures: allocated_bytes, quota_bytes, peak_usage_bytes,
    oom_count, allocation_count, deallocation_count."""
    _check_slot(slot)
    cdef rmt_mem_stats s
    rmt_mem_get_stats(slot, &s)
    return {
        "allocated_bytes": s.allocated_bytes, "quota_bytes": s.quota_bytes,
        "peak_usage_bytes": s.peak_usage_bytes, "oom_count": s.oom_count,
        "allocation_count": s.allocation_count, "deallocation_count": s.deallocation_count,
    }


def reset_tenant_stats(int slot):
    """Restart a slot's counters (pool hits/misses/evictions, memory peak and
    counts); partitions and quotas are kept. For a slot given to a new tenant."""
    _check_slot(slot)
    rmt_mem_reset_stats(slot)
    if _state == "hooks":
        rmt_pool_reset_counters(_pool, slot)
