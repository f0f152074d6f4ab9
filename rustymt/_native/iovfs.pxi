# IO-metering VFS (native/iovfs.c): the "rustymt" VFS that install() registers,
# per-tenant limits and stats, and the token bucket for tests against the twin.
from libc.stdint cimport int64_t

cdef extern from "iovfs.h" nogil:
    const char *RMT_IOVFS_NAME
    ctypedef struct rmt_iovfs_stats:
        int64_t reads
        int64_t writes
        int64_t read_bytes
        int64_t write_bytes
        int64_t throttled_ns
        int64_t iops_limit
        int64_t bytes_limit
    ctypedef struct rmt_iobucket:
        int64_t rate
        int64_t burst_ns
        int64_t tat_ns
    int rmt_iovfs_register()
    int rmt_iovfs_set_limits(int tenant, int64_t iops, int64_t bytes_per_sec)
    int rmt_iovfs_get_stats(int tenant, rmt_iovfs_stats *out)
    int rmt_iovfs_reset_stats(int tenant)
    int64_t rmt_iovfs_account(int tenant, int is_write, int amount, int64_t now)
    int64_t rmt_iobucket_admit(rmt_iobucket *b, int64_t cost, int64_t now_ns)
    void rmt_iobucket_configure(rmt_iobucket *b, int64_t rate, int64_t burst_units)


IOVFS_NAME = RMT_IOVFS_NAME.decode("ascii")


def iovfs_set_limits(int tenant, int64_t iops=0, int64_t bytes_per_sec=0):
    """Cap a tenant slot's datafile IO (0 = unlimited); live."""
    if rmt_iovfs_set_limits(tenant, iops, bytes_per_sec) != 0:
        raise ValueError(f"bad IO limits for tenant slot {tenant}: iops={iops}, bytes_per_sec={bytes_per_sec} (>= 0)")


def iovfs_stats(int tenant):
    """reads, writes, read_bytes, write_bytes, throttled_ns and the limits of a slot."""
    cdef rmt_iovfs_stats st
    if rmt_iovfs_get_stats(tenant, &st) != 0:
        raise ValueError(f"tenant slot out of range: {tenant}")
    return {
        "reads": st.reads,
        "writes": st.writes,
        "read_bytes": st.read_bytes,
        "write_bytes": st.write_bytes,
        "throttled_ns": st.throttled_ns,
        "iops_limit": st.iops_limit,
        "bytes_limit": st.bytes_limit,
    }


def iovfs_reset_stats(int tenant):
    """Zero a slot's IO counters (limits kept)."""
    if rmt_iovfs_reset_stats(tenant) != 0:
        raise ValueError(f"tenant slot out of range: {tenant}")


def iovfs_account(int tenant, bint is_write, int amount, int64_t now_ns):
    """Count one IO for a slot at an explicit time, as the VFS does before it
    sleeps; returns the wait owed (ns). For tests against twins.iovfs."""
    if not 0 <= tenant < MAX_TENANTS or amount < 0:
        raise ValueError(f"bad IO for tenant slot {tenant}: amount={amount}")
    return rmt_iovfs_account(tenant, is_write, amount, now_ns)


cdef int _iovfs_register() except -1:
    """Register the "rustymt" VFS; only after SQLite is initialized with the hooks."""
    cdef int rc = rmt_iovfs_register()
    if rc != 0:
        raise RuntimeError(f"cannot register the {IOVFS_NAME!r} VFS ({rc})")
    return 0


cdef class IoBucket:
    """The VFS's GCRA token bucket on explicit time (for twin comparisons)."""
    cdef rmt_iobucket b

    def __cinit__(self, int64_t rate, int64_t burst_units):
        if rate < 0 or burst_units < 0:
            raise ValueError("rate and burst_units must be >= 0")
        rmt_iobucket_configure(&self.b, rate, burst_units)

    def admit(self, int64_t cost, int64_t now_ns):
        """Reserve cost units at now_ns; returns the wait in ns."""
        if cost < 0:
            raise ValueError("cost must be >= 0")
        return rmt_iobucket_admit(&self.b, cost, now_ns)
