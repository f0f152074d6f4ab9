# Weighted-fair statement scheduler (native/wfq.c): configuration, stats, the
# engine's scheduler, a synthetic CPU-bound statement for tests/benchmarks, and
# the deterministic simulation that tests compare with twins/wfq.py.
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free

cdef extern from "wfq.h" nogil:
    ctypedef struct rmt_wfq:
        pass
    ctypedef struct rmt_wfq_waiter:
        int tenant
        int state
        int preempt
    ctypedef struct rmt_wfq_stats:
        int shares
        int min_percent
        int max_percent
        int64_t used_cpu_ns
        int64_t throttled_ns
        int64_t wait_ns
        double throttle_ratio
        double allocation_percent
        int running
        int waiting
        int64_t vtime
        int64_t effective_weight
    int RMT_WFQ_MAX_TENANTS
    int RMT_WFQ_MAX_SHARES
    int RMT_WFQ_DEFAULT_SHARES
    int RMT_WFQ_IDLE
    int RMT_WFQ_WAITING
    int RMT_WFQ_RUNNING
    rmt_wfq *rmt_wfq_create(int tokens, int64_t period_ns, int64_t quantum_ns)
    void rmt_wfq_destroy(rmt_wfq *q)
    int rmt_wfq_tokens(const rmt_wfq *q)
    int rmt_wfq_set_tokens(rmt_wfq *q, int tokens)
    int rmt_wfq_configure(rmt_wfq *q, int tenant, int shares, int min_percent, int max_percent)
    int rmt_wfq_get_stats(rmt_wfq *q, int tenant, int64_t now_ns, rmt_wfq_stats *out)
    void rmt_wfq_acquire(rmt_wfq *q, int tenant)
    void rmt_wfq_release()
    int rmt_wfq_progress_handler(void *unused)
    void rmt_wfq_set_engine(rmt_wfq *q, int progress_ops)
    rmt_wfq *rmt_wfq_engine()
    uint64_t rmt_wfq_run_synthetic(rmt_wfq *q, int tenant, int64_t iterations, int check_every)
    void rmt_wfq_sim_arrive(rmt_wfq *q, rmt_wfq_waiter *w, int tenant, int64_t now_ns)
    int rmt_wfq_sim_charge(rmt_wfq *q, rmt_wfq_waiter *w, int64_t cpu_ns, int64_t now_ns)
    void rmt_wfq_sim_yield(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now_ns)
    void rmt_wfq_sim_release(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now_ns)
    void rmt_wfq_sim_tick(rmt_wfq *q, int64_t now_ns)
    int rmt_wfq_sim_courteous(rmt_wfq *q, int tenant, int64_t now_ns)
    int rmt_wfq_sim_set_tokens(rmt_wfq *q, int tokens, int64_t now_ns)


WFQ_MAX_TENANTS = RMT_WFQ_MAX_TENANTS
WFQ_MAX_SHARES = RMT_WFQ_MAX_SHARES
WFQ_DEFAULT_SHARES = RMT_WFQ_DEFAULT_SHARES
_WFQ_STATES = {RMT_WFQ_IDLE: "idle", RMT_WFQ_WAITING: "waiting", RMT_WFQ_RUNNING: "running"}


cdef dict _wfq_stats_dict(rmt_wfq *q, int tenant, int64_t now_ns):
    cdef rmt_wfq_stats st
    if rmt_wfq_get_stats(q, tenant, now_ns, &st) != 0:
        raise ValueError(f"tenant slot out of range: {tenant}")
    return {
        "shares": st.shares,
        "min_percent": st.min_percent,
        "max_percent": st.max_percent,
        "used_cpu_ns": st.used_cpu_ns,
        "throttled_ns": st.throttled_ns,
        "wait_ns": st.wait_ns,
        "throttle_ratio": st.throttle_ratio,
        "allocation_percent": st.allocation_percent,
        "running": st.running,
        "waiting": st.waiting,
        "vtime": st.vtime,
        "effective_weight": st.effective_weight,
    }


cdef _wfq_configure(rmt_wfq *q, int tenant, int shares, int min_percent, int max_percent):
    if rmt_wfq_configure(q, tenant, shares, min_percent, max_percent) != 0:
        raise ValueError(
            f"bad CPU settings for tenant slot {tenant}: shares={shares} (1..{RMT_WFQ_MAX_SHARES}), "
            f"min_percent={min_percent}, max_percent={max_percent} (>= 0, min <= max when max set)"
        )


cdef class WfqScheduler:
    """A live scheduler: `tokens` CPU slots shared weighted-fairly by tenants.

    tokens <= 0 means one per usable core; period and quantum in ms.
    install() makes it the engine's scheduler (statements acquire from it).
    """
    cdef rmt_wfq *q
    cdef bint installed  # once installed, never freed (threads may hold its slots)
    cdef readonly double period_ms
    cdef readonly double quantum_ms

    def __cinit__(self, int tokens=0, double period_ms=100.0, double quantum_ms=10.0):
        if period_ms <= 0 or quantum_ms <= 0:
            raise ValueError("period_ms and quantum_ms must be > 0")
        self.q = rmt_wfq_create(tokens, <int64_t>(period_ms * 1e6), <int64_t>(quantum_ms * 1e6))
        if self.q == NULL:
            raise MemoryError()
        self.period_ms = period_ms
        self.quantum_ms = quantum_ms

    def __dealloc__(self):
        if self.q != NULL and not self.installed:
            rmt_wfq_destroy(self.q)

    @property
    def tokens(self):
        return rmt_wfq_tokens(self.q)

    @tokens.setter
    def tokens(self, int value):
        if rmt_wfq_set_tokens(self.q, value) != 0:
            raise ValueError("tokens must be > 0")

    def configure(self, int tenant, int shares=RMT_WFQ_DEFAULT_SHARES, int min_percent=0, int max_percent=0):
        """Set a tenant slot's shares, min_percent and max_percent (0 = none); live."""
        _wfq_configure(self.q, tenant, shares, min_percent, max_percent)

    def stats(self, int tenant):
        """The spec's CPU isolation fields (+ wait_ns and diagnostics) for a slot."""
        return _wfq_stats_dict(self.q, tenant, -1)

    def run_synthetic(self, int tenant, int64_t iterations, int check_every=1000):
        """Run a CPU-bound C loop as one statement of `tenant` (GIL released).

        The progress handler is called every `check_every` iterations (0: never).
        """
        cdef uint64_t out
        with nogil:
            out = rmt_wfq_run_synthetic(self.q, tenant, iterations, check_every)
        return out

    def install(self, int progress_ops=1000):
        """Make this the engine's scheduler: every statement of every connection
        opened afterwards runs under it (acquire around each batch of steps, a C
        progress handler every progress_ops VM instructions, slot freed while
        waiting on a lock). It is then never freed.
        """
        if progress_ops < 0:
            raise ValueError("progress_ops must be >= 0")
        if not self.installed:
            self.installed = True
            _wfq_installed.append(self)
        rmt_wfq_set_engine(self.q, progress_ops)


# Every scheduler ever installed stays alive: threads may hold its slots.
_wfq_installed = []


def wfq_engine():
    """The engine's installed WfqScheduler, or None."""
    return _wfq_installed[-1] if _wfq_installed and rmt_wfq_engine() != NULL else None


def wfq_uninstall():
    """Stop scheduling statements of connections (hooks off; kept alive)."""
    rmt_wfq_set_engine(NULL, 0)


def wfq_run_unscheduled(int64_t iterations):
    """The synthetic statement with no scheduler and no progress handler (baseline)."""
    cdef uint64_t out
    with nogil:
        out = rmt_wfq_run_synthetic(NULL, 0, iterations, 0)
    return out


cdef class WfqSimulation:
    """The scheduler's decisions on explicit time: threads are numbered 0..n-1.

    Same methods as rustymt._native.twins.wfq.WfqSimulation (the oracle).
    """
    cdef rmt_wfq *q
    cdef rmt_wfq_waiter *w
    cdef int n

    def __cinit__(self, int tokens, int64_t period_ns, int64_t quantum_ns, int threads):
        if tokens <= 0 or period_ns <= 0 or quantum_ns <= 0 or threads <= 0:
            raise ValueError("tokens, period_ns, quantum_ns and threads must be > 0")
        self.q = rmt_wfq_create(tokens, period_ns, quantum_ns)
        self.w = <rmt_wfq_waiter *>calloc(threads, sizeof(rmt_wfq_waiter))
        if self.q == NULL or self.w == NULL:
            raise MemoryError()
        self.n = threads

    def __dealloc__(self):
        if self.q != NULL:
            rmt_wfq_destroy(self.q)
        free(self.w)

    cdef rmt_wfq_waiter *_thread(self, int thread, int want_state) except NULL:
        if thread < 0 or thread >= self.n:
            raise ValueError(f"no thread {thread}")
        if want_state >= 0 and self.w[thread].state != want_state:
            raise ValueError(f"thread {thread} is {_WFQ_STATES[self.w[thread].state]}")
        return &self.w[thread]

    def configure(self, int tenant, int shares=RMT_WFQ_DEFAULT_SHARES, int min_percent=0, int max_percent=0):
        _wfq_configure(self.q, tenant, shares, min_percent, max_percent)

    def set_tokens(self, int tokens, int64_t now):
        if rmt_wfq_sim_set_tokens(self.q, tokens, now) != 0:
            raise ValueError("tokens must be > 0")

    def arrive(self, int thread, int tenant, int64_t now):
        if tenant <= 0 or tenant >= RMT_WFQ_MAX_TENANTS:
            raise ValueError(f"tenant slot out of range: {tenant}")
        rmt_wfq_sim_arrive(self.q, self._thread(thread, RMT_WFQ_IDLE), tenant, now)

    def charge(self, int thread, int64_t cpu_ns, int64_t now):
        if cpu_ns < 0:
            raise ValueError("cpu_ns must be >= 0")
        return bool(rmt_wfq_sim_charge(self.q, self._thread(thread, RMT_WFQ_RUNNING), cpu_ns, now))

    def yield_(self, int thread, int64_t now):
        rmt_wfq_sim_yield(self.q, self._thread(thread, RMT_WFQ_RUNNING), now)

    def release(self, int thread, int64_t now):
        rmt_wfq_sim_release(self.q, self._thread(thread, RMT_WFQ_RUNNING), now)

    def tick(self, int64_t now):
        rmt_wfq_sim_tick(self.q, now)

    def state(self, int thread):
        return _WFQ_STATES[self._thread(thread, -1).state]

    def preempted(self, int thread):
        """A running thread was asked to check now (wakeup preemption)."""
        return bool(self._thread(thread, -1).preempt)

    def courteous(self, int tenant, int64_t now):
        """Running threads of `tenant` would sched_yield at every progress check."""
        if tenant <= 0 or tenant >= RMT_WFQ_MAX_TENANTS:
            raise ValueError(f"tenant slot out of range: {tenant}")
        return bool(rmt_wfq_sim_courteous(self.q, tenant, now))

    def stats(self, int tenant, int64_t now):
        return _wfq_stats_dict(self.q, tenant, now)
