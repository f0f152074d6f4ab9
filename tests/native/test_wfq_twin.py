"""The C scheduler and its Python twin make the same decisions.

Random event sequences (arrivals, CPU charges with yields, releases, time
passing, live reconfiguration) run through _core.WfqSimulation and
twins.wfq.WfqSimulation; every grant, every yield decision and every statistic
must agree. Then the fairness goals are checked on the twin's own simulation
so that an oracle bug cannot hide behind agreement.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from rustymt._native import _core
from rustymt._native.twins import wfq as twin

MS = 1_000_000
THREADS = 8
TENANTS = 4

configs = st.tuples(
    st.integers(1, 5000),  # shares
    st.one_of(st.just(0), st.integers(1, 80)),  # min_percent
    st.one_of(st.just(0), st.integers(5, 250)),  # max_percent
)
# Thread numbers in events are indexes among the threads in the right state
# (idle for arrive, running for run/release), so almost every event applies.
thread_ix = st.integers(0, THREADS - 1)
events = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), thread_ix, st.integers(1, TENANTS)),
        st.tuples(st.just("run"), thread_ix, st.integers(0, 15 * MS)),
        st.tuples(st.just("run"), thread_ix, st.integers(0, 15 * MS)),
        st.tuples(st.just("run"), thread_ix, st.integers(0, 15 * MS)),
        st.tuples(st.just("release"), thread_ix, st.just(0)),
        st.tuples(st.just("tick"), st.just(0), st.just(0)),
        st.tuples(st.just("tokens"), st.integers(1, 3), st.just(0)),
        st.tuples(st.just("configure"), st.integers(1, TENANTS), configs),
    ),
    min_size=10,
    max_size=150,
)


def pick(sim, state, index):
    """The index-th thread (cyclically) in `state`, or None."""
    found = [i for i in range(THREADS) if sim.state(i) == state]
    return found[index % len(found)] if found else None


def both(tokens):
    return [cls(tokens, 50 * MS, 5 * MS, THREADS) for cls in (_core.WfqSimulation, twin.WfqSimulation)]


@settings(max_examples=examples(200), deadline=None)
@given(
    tokens=st.integers(1, 3),
    initial=st.lists(configs, min_size=TENANTS, max_size=TENANTS),
    steps=events,
    gaps=st.lists(st.one_of(st.integers(0, 7 * MS), st.integers(0, 7 * MS), st.integers(0, 250 * MS)), min_size=150, max_size=150),
)
def test_same_decisions_on_random_event_sequences(tokens, initial, steps, gaps):
    sims = both(tokens)
    for sim in sims:
        for tenant, (shares, lo, hi) in enumerate(initial, start=1):
            sim.configure(tenant, shares, lo, hi if hi >= lo else 0)
    now = 1
    for step, ((kind, a, b), gap) in enumerate(zip(steps, gaps)):
        now += gap
        c_sim, py_sim = sims
        if kind == "arrive" and (thread := pick(c_sim, "idle", a)) is not None:
            for sim in sims:
                sim.arrive(thread, b, now)
        elif kind == "run" and (thread := pick(c_sim, "running", a)) is not None:
            decisions = [sim.charge(thread, b, now) for sim in sims]
            assert decisions[0] == decisions[1], f"yield decision differs at {now}"
            if decisions[0]:
                for sim in sims:
                    sim.yield_(thread, now)
        elif kind == "release" and (thread := pick(c_sim, "running", a)) is not None:
            for sim in sims:
                sim.release(thread, now)
        elif kind == "tick":
            for sim in sims:
                sim.tick(now)
        elif kind == "tokens":
            for sim in sims:
                sim.set_tokens(a, now)
        elif kind == "configure":
            shares, lo, hi = b
            for sim in sims:
                sim.configure(a, shares, lo, hi if hi >= lo else 0)
        assert [c_sim.state(i) for i in range(THREADS)] == [py_sim.state(i) for i in range(THREADS)]
        assert [c_sim.preempted(i) for i in range(THREADS)] == [py_sim.preempted(i) for i in range(THREADS)]
        assert [c_sim.courteous(t, now) for t in range(1, TENANTS + 1)] == \
            [py_sim.courteous(t, now) for t in range(1, TENANTS + 1)]
        if step % 10 == 9:
            assert_same_stats(sims, now)
    assert_same_stats(sims, now)


def assert_same_stats(sims, now):
    for tenant in range(1, TENANTS + 1):
        c_stats, py_stats = (sim.stats(tenant, now) for sim in sims)
        assert c_stats.pop("allocation_percent") == pytest.approx(py_stats.pop("allocation_percent"))
        assert c_stats.pop("throttle_ratio") == pytest.approx(py_stats.pop("throttle_ratio"))
        assert c_stats == py_stats, f"tenant {tenant} at {now}"


def saturate(sim, shares, threads_each, seconds, mins=None, maxes=None):
    """Every thread always busy; 1 ms steps; charge and maybe yield per quantum."""
    owners = []
    for tenant, s in enumerate(shares, start=1):
        sim.configure(tenant, s, (mins or {}).get(tenant, 0), (maxes or {}).get(tenant, 0))
        owners += [tenant] * threads_each
    burned = [0] * len(owners)
    for thread, tenant in enumerate(owners):
        sim.arrive(thread, tenant, 1)
    now = 1
    for _ in range(seconds * 1000):
        now += MS
        sim.tick(now)
        for thread in range(len(owners)):
            if sim.state(thread) != "running":
                continue
            burned[thread] += MS
            if burned[thread] >= 5 * MS:
                if sim.charge(thread, burned[thread], now):
                    sim.yield_(thread, now)
                burned[thread] = 0
    return [sim.stats(t, now)["used_cpu_ns"] for t in range(1, len(shares) + 1)], now


@pytest.mark.parametrize("shares", [(1, 3), (1, 1, 2, 4)])
def test_twin_delivers_weights_on_two_tokens(shares):
    used, _ = saturate(twin.WfqSimulation(2, 50 * MS, 5 * MS, 8), [s * 1000 for s in shares], 2, 4)
    for got, want in zip(used, shares):
        assert got / sum(used) == pytest.approx(want / sum(shares), rel=0.03)


def test_twin_caps_a_lone_tenant_at_max_percent_and_keeps_min_percent():
    used, now = saturate(twin.WfqSimulation(2, 50 * MS, 5 * MS, 8), [1000], 2, 4, maxes={1: 50})
    assert used[0] / (now - 1) == pytest.approx(0.50, abs=0.015)
    used, _ = saturate(twin.WfqSimulation(2, 50 * MS, 5 * MS, 8), [100, 1000], 2, 4, mins={1: 40})
    assert used[0] / sum(used) * 2 * 100 >= 39.5  # percent of one core out of two


def test_simulation_rejects_bad_input():
    for cls in (_core.WfqSimulation, twin.WfqSimulation):
        sim = cls(1, 50 * MS, 5 * MS, 2)
        with pytest.raises(ValueError):
            sim.configure(1, 0)
        with pytest.raises(ValueError):
            sim.configure(1, 1024, 60, 50)
        with pytest.raises(ValueError):
            sim.arrive(0, 0, 1)
        with pytest.raises(ValueError):
            sim.release(1, 1)  # idle thread
        with pytest.raises(ValueError):
            sim.charge(5, 1, 1)  # no such thread


@pytest.mark.parametrize("cls", [_core.WfqSimulation, twin.WfqSimulation])
def test_waiting_out_its_own_cap_is_throttled_not_queued(cls):
    """A lone capped tenant waits for its next period: throttled_ns, not wait_ns
    (the SLA tracker tells the tenant's own cap from the platform's queueing with these)."""
    sim = cls(2, 100 * MS, 10 * MS, 2)
    sim.configure(1, 1024, 0, 10)           # 10 ms of CPU per 100 ms period
    sim.arrive(0, 1, 1)
    assert sim.charge(0, 10 * MS, 11 * MS)  # budget spent: yield
    sim.yield_(0, 11 * MS)
    assert sim.state(0) == "waiting"
    boundary = 1 + 100 * MS                   # the period started with the first event
    sim.tick(boundary)                        # next period: granted again
    assert sim.state(0) == "running"
    stats = sim.stats(1, boundary)
    assert stats["throttled_ns"] == boundary - 11 * MS and stats["wait_ns"] == 0


@pytest.mark.parametrize("cls", [_core.WfqSimulation, twin.WfqSimulation])
def test_first_statement_gets_no_credit_and_a_waiter_behind_its_share_preempts(cls):
    sim = cls(1, 100 * MS, 10 * MS, 2)
    sim.arrive(0, 1, 1)
    for step in range(1, 101):                # tenant 1 runs alone for a second
        assert not sim.charge(0, 10 * MS, 1 + step * 10 * MS)
    now = 1 + 1000 * MS
    sim.arrive(1, 2, now)                     # tenant 2's first statement ever
    assert sim.state(1) == "waiting" and sim.preempted(0)  # it is behind: tenant 1 is asked to check now
    assert sim.charge(0, 0, now)              # and yields at that check
    sim.yield_(0, now)
    assert sim.state(1) == "running"
    turns = 0                                  # but tenant 2 is only one quantum behind, not a second
    for k in range(1, 11):
        running = 0 if sim.state(0) == "running" else 1
        turns += running == 1
        if sim.charge(running, 10 * MS, now + k * 10 * MS):
            sim.yield_(running, now + k * 10 * MS)
    assert 4 <= turns <= 7


@pytest.mark.parametrize("cls", [_core.WfqSimulation, twin.WfqSimulation])
def test_a_tenant_ahead_of_one_active_within_a_quantum_is_courteous_to_the_kernel(cls):
    sim = cls(2, 100 * MS, 10 * MS, 2)
    sim.arrive(0, 1, 1)
    assert not sim.charge(0, 5 * MS, 5 * MS)
    assert not sim.courteous(1, 5 * MS)       # alone: keeps the core
    sim.arrive(1, 2, 6 * MS)                  # a point select of tenant 2: a free slot
    assert sim.state(1) == "running"
    assert sim.courteous(1, 6 * MS) and not sim.courteous(2, 6 * MS)  # tenant 2 is behind, 1 ahead
    sim.charge(1, 50_000, 6 * MS)
    sim.release(1, 6 * MS)
    assert sim.courteous(1, 6 * MS + 10 * MS)       # idle for up to a quantum: still courted
    assert not sim.courteous(1, 6 * MS + 10 * MS + 1)  # then the hog has the core to itself again
