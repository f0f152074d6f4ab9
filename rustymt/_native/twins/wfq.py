"""Pure-Python twin of native/wfq.c's decisions (a test oracle).

The same algorithm with the same integer arithmetic, driven by explicit
times: start-time fair queuing over tenants (vtime += cpu * VT_UNIT /
effective weight), min_percent by water-filled effective weights, max_percent
as a CPU budget per period with carried overrun, no credit for idle time
beyond one quantum. Method names match _core.WfqSimulation so tests can run
one event sequence through both and compare every decision. See wfq.c for the
reasoning; this file only restates the rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_TENANTS = 256
MAX_SHARES = 262144
DEFAULT_SHARES = 1024
VT_UNIT = 1 << 20
WEIGHT_SHIFT = 10
PPM = 1_000_000
MIN_CAP_PPM = 900_000
MIN_HEADROOM = 1025  # per mille: aim 2.5% above a minimum
MIN_SLICE_NS = 100_000
REBASE_AT = 1 << 61
REBASE_KEEP = 1 << 40

IDLE, WAITING, RUNNING = "idle", "waiting", "running"


@dataclass
class _Tenant:
    shares: int = DEFAULT_SHARES
    min_percent: int = 0
    max_percent: int = 0
    weight: int = DEFAULT_SHARES << WEIGHT_SHIFT
    eff_weight: int = DEFAULT_SHARES << WEIGHT_SHIFT
    vtime: int = 0
    running: int = 0
    queue: list = field(default_factory=list)  # thread ids, oldest first
    idle_since: int = -1
    budget_used_ns: int = 0
    period_cpu_ns: int = 0
    prev_period_cpu_ns: int = 0
    throttled_since: int = -1
    used_cpu_ns: int = 0
    wait_ns: int = 0
    throttled_ns: int = 0

    @property
    def waiting(self) -> int:
        return len(self.queue)

    @property
    def active(self) -> bool:
        return self.running + self.waiting > 0


class WfqSimulation:
    """Scheduler state machine on explicit time; threads are 0..threads-1."""

    def __init__(self, tokens: int, period_ns: int, quantum_ns: int, threads: int):
        if tokens <= 0 or period_ns <= 0 or quantum_ns <= 0 or threads <= 0:
            raise ValueError("tokens, period_ns, quantum_ns and threads must be > 0")
        self.tokens = tokens
        self.free_tokens = tokens
        self.period_ns = period_ns
        self.quantum_ns = quantum_ns
        self.period_start = -1
        self.vclock = 0
        self.weights_stale = False
        self.hi = 1
        self.t = [_Tenant() for _ in range(MAX_TENANTS)]
        self.thread_state = [IDLE] * threads
        self.thread_tenant = [0] * threads
        self.wait_start = [0] * threads
        self.throttled_mark = [0] * threads  # tenant's throttled wall time when the thread began waiting
        self.preempt = [False] * threads      # running thread asked to check before its quantum ends
        self.run_order: list[int] = []        # running threads in grant order

    # ---- configuration -------------------------------------------------
    def configure(self, tenant, shares=DEFAULT_SHARES, min_percent=0, max_percent=0):
        if not 0 <= tenant < MAX_TENANTS or not 1 <= shares <= MAX_SHARES:
            raise ValueError(f"bad CPU settings for tenant slot {tenant}")
        if min_percent < 0 or max_percent < 0:
            raise ValueError(f"bad CPU settings for tenant slot {tenant}")
        if max_percent > 0 and min_percent > max_percent:
            raise ValueError(f"bad CPU settings for tenant slot {tenant}")
        t = self.t[tenant]
        t.shares, t.min_percent, t.max_percent = shares, min_percent, max_percent
        t.weight = shares << WEIGHT_SHIFT
        self.weights_stale = True
        self.hi = max(self.hi, tenant + 1)

    def set_tokens(self, tokens, now):
        if tokens <= 0:
            raise ValueError("tokens must be > 0")
        self.free_tokens += tokens - self.tokens
        self.tokens = tokens
        self.weights_stale = True
        if self.period_start >= 0:
            self._dispatch(now)

    # ---- rules -----------------------------------------------------------
    def _tenants(self):
        return range(1, self.hi)

    def _budget(self, t):
        return t.max_percent * self.period_ns // 100

    def _throttled(self, t):
        return t.max_percent > 0 and t.budget_used_ns >= self._budget(t)

    def _throttle_clock(self, t, now):
        on = self._throttled(t) and t.waiting > 0
        if on and t.throttled_since < 0:
            t.throttled_since = now
        elif not on and t.throttled_since >= 0:
            t.throttled_ns += now - t.throttled_since
            t.throttled_since = -1

    @staticmethod
    def _throttled_total(t, now):
        return t.throttled_ns + (now - t.throttled_since if t.throttled_since >= 0 else 0)

    def _refresh_weights(self):
        m = {}
        for i in self._tenants():
            t = self.t[i]
            t.eff_weight = t.weight
            if t.active and t.min_percent > 0:
                m[i] = min(t.min_percent * PPM * MIN_HEADROOM // (100 * 1000 * self.tokens), PPM)
        sum_m = sum(m.values())
        if sum_m > MIN_CAP_PPM:
            m = {i: v * MIN_CAP_PPM // sum_m for i, v in m.items()}
        rest = PPM
        W = sum(self.t[i].weight for i in self._tenants() if self.t[i].active)
        pinned = set()
        changed = True
        while changed and W > 0:
            changed = False
            W_pass, rest_pass = W, rest
            for i in self._tenants():
                if i in pinned or m.get(i, 0) == 0:
                    continue
                if m[i] * W_pass > self.t[i].weight * rest_pass:
                    pinned.add(i)
                    changed = True
                    rest -= m[i]
                    W -= self.t[i].weight
        for i in pinned:
            e = m[i] * W // rest if W > 0 else m[i]
            self.t[i].eff_weight = max(e, 1)
        self.weights_stale = False

    def _roll(self, now):
        if self.period_start < 0:
            self.period_start = now
            return
        if now < self.period_start + self.period_ns:
            return
        n = (now - self.period_start) // self.period_ns
        boundary = self.period_start + self.period_ns
        for i in self._tenants():
            t = self.t[i]
            if t.throttled_since >= 0:
                t.throttled_ns += boundary - t.throttled_since
                t.throttled_since = -1
            carry = t.budget_used_ns - n * self._budget(t)
            t.budget_used_ns = carry if t.max_percent > 0 and carry > 0 else 0
            t.prev_period_cpu_ns = t.period_cpu_ns if n == 1 else 0
            t.period_cpu_ns = 0
            self._throttle_clock(t, boundary)
        self.period_start += n * self.period_ns

    def _dispatch(self, now):
        active = [self.t[i].vtime for i in self._tenants() if self.t[i].active]
        if active and min(active) > self.vclock:
            self.vclock = min(active)
        if self.vclock > REBASE_AT:
            base = self.vclock - REBASE_KEEP
            for i in self._tenants():
                self.t[i].vtime = max(self.t[i].vtime - base, 0)
            self.vclock -= base
        while self.free_tokens > 0:
            best = None
            for i in self._tenants():
                t = self.t[i]
                if t.waiting == 0 or self._throttled(t):
                    continue
                if best is None or t.vtime < self.t[best].vtime:
                    best = i
            if best is None:
                break
            t = self.t[best]
            thread = t.queue.pop(0)
            t.running += 1
            self.free_tokens -= 1
            # waiting while over its own budget is throttling, not queueing
            t.wait_ns += now - self.wait_start[thread] - (self._throttled_total(t, now) - self.throttled_mark[thread])
            self.thread_state[thread] = RUNNING
            self.preempt[thread] = False
            self.run_order.append(thread)

    def _enqueue(self, thread, tenant, now):
        t = self.t[tenant]
        if not t.active:
            self.weights_stale = True
            if t.idle_since < 0 or now - t.idle_since > self.quantum_ns:  # never active: idle for ever
                lag = self.quantum_ns * VT_UNIT // t.weight
                if t.vtime < self.vclock - lag:
                    t.vtime = self.vclock - lag
        self.thread_tenant[thread] = tenant
        self.thread_state[thread] = WAITING
        self.wait_start[thread] = now
        self.throttled_mark[thread] = self._throttled_total(t, now)
        t.queue.append(thread)
        self.hi = max(self.hi, tenant + 1)
        self._throttle_clock(t, now)

    def _leave(self, thread, now):
        t = self.t[self.thread_tenant[thread]]
        self.run_order.remove(thread)
        self.preempt[thread] = False
        t.running -= 1
        self.free_tokens += 1
        self.thread_state[thread] = IDLE
        if not t.active:
            t.idle_since = now
            self.weights_stale = True

    def _charge(self, thread, cpu_ns, now):
        tenant = self.thread_tenant[thread]
        t = self.t[tenant]
        self.preempt[thread] = False
        if self.weights_stale:
            self._refresh_weights()
        t.used_cpu_ns += cpu_ns
        t.period_cpu_ns += cpu_ns
        t.budget_used_ns += cpu_ns
        t.vtime += cpu_ns * VT_UNIT // t.eff_weight
        self._throttle_clock(t, now)
        if self._throttled(t):
            return True
        return any(
            i != tenant and o.waiting > 0 and not self._throttled(o) and o.vtime < t.vtime
            for i, o in ((i, self.t[i]) for i in self._tenants())
        )

    def _preempt_for(self, thread):
        """Wakeup preemption: `thread` waits and no slot was free. Flag the
        first-granted running thread of the tenant with the largest vtime,
        if larger than the waiter's tenant's and not flagged yet."""
        if self.thread_state[thread] != WAITING:
            return
        tenant = self.thread_tenant[thread]
        if self._throttled(self.t[tenant]):
            return
        victim, worst = None, self.t[tenant].vtime
        for r in self.run_order:
            other = self.thread_tenant[r]
            if other == tenant or self.preempt[r]:
                continue
            if self.t[other].vtime > worst:
                victim, worst = r, self.t[other].vtime
        if victim is not None:
            self.preempt[victim] = True

    def _need(self, thread, state):
        if not 0 <= thread < len(self.thread_state):
            raise ValueError(f"no thread {thread}")
        if self.thread_state[thread] != state:
            raise ValueError(f"thread {thread} is {self.thread_state[thread]}")

    # ---- events (same as _core.WfqSimulation) ----------------------------
    def arrive(self, thread, tenant, now):
        if not 0 < tenant < MAX_TENANTS:
            raise ValueError(f"tenant slot out of range: {tenant}")
        self._need(thread, IDLE)
        self._roll(now)
        self._enqueue(thread, tenant, now)
        self._dispatch(now)
        self._preempt_for(thread)

    def charge(self, thread, cpu_ns, now):
        if cpu_ns < 0:
            raise ValueError("cpu_ns must be >= 0")
        self._need(thread, RUNNING)
        self._roll(now)
        should_yield = self._charge(thread, cpu_ns, now)
        self._dispatch(now)
        return should_yield

    def yield_(self, thread, now):
        self._need(thread, RUNNING)
        tenant = self.thread_tenant[thread]
        self._roll(now)
        self._leave(thread, now)
        self._enqueue(thread, tenant, now)
        self._dispatch(now)
        self._preempt_for(thread)
        self._throttle_clock(self.t[tenant], now)

    def release(self, thread, now):
        self._need(thread, RUNNING)
        self._roll(now)
        self._leave(thread, now)
        self._dispatch(now)

    def tick(self, now):
        self._roll(now)
        self._dispatch(now)
        for i in self._tenants():
            self._throttle_clock(self.t[i], now)

    def preempted(self, thread):
        """A running thread was asked to check now (wakeup preemption)."""
        if not 0 <= thread < len(self.thread_state):
            raise ValueError(f"no thread {thread}")
        return self.preempt[thread]

    def courteous(self, tenant, now):
        """Kernel courtesy: running threads of `tenant` give the core back to
        the kernel (sched_yield, slot kept) at every progress check while
        another tenant with a smaller vtime was active within a quantum."""
        if not 0 < tenant < MAX_TENANTS:
            raise ValueError(f"tenant slot out of range: {tenant}")
        me = self.t[tenant]
        return any(
            o.vtime < me.vtime and (o.active or (o.idle_since >= 0 and now - o.idle_since <= self.quantum_ns))
            for i, o in ((i, self.t[i]) for i in self._tenants()) if i != tenant
        )

    def state(self, thread):
        if not 0 <= thread < len(self.thread_state):
            raise ValueError(f"no thread {thread}")
        return self.thread_state[thread]

    def stats(self, tenant, now):
        if not 0 <= tenant < MAX_TENANTS:
            raise ValueError(f"tenant slot out of range: {tenant}")
        if self.period_start >= 0:
            self.tick(now)
        if self.weights_stale:
            self._refresh_weights()
        t = self.t[tenant]
        throttled_ns = t.throttled_ns + (now - t.throttled_since if t.throttled_since >= 0 else 0)
        denom = throttled_ns + t.used_cpu_ns
        p = float(self.period_ns)
        elapsed = min(float(now - self.period_start), p) if self.period_start >= 0 else 0.0
        window_cpu = t.prev_period_cpu_ns * (p - elapsed) / p + t.period_cpu_ns
        return {
            "shares": t.shares,
            "min_percent": t.min_percent,
            "max_percent": t.max_percent,
            "used_cpu_ns": t.used_cpu_ns,
            "throttled_ns": throttled_ns,
            "wait_ns": t.wait_ns,
            "throttle_ratio": throttled_ns / denom if denom > 0 else 0.0,
            "allocation_percent": 100.0 * window_cpu / p,
            "running": t.running,
            "waiting": t.waiting,
            "vtime": t.vtime,
            "effective_weight": t.eff_weight,
        }
