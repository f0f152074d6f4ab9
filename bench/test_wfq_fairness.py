"""Weighted-fair scheduling of real SQLite statements through the engine
binding on this 2-core machine, saturated (2 slots, 2 threads per tenant,
CPU-bound recursive-CTE statements longer than the quantum, so the progress
handler's yields are what makes it fair).

Shares are read from the scheduler's used_cpu_ns (thread CPU time), not wall
time: other developers share these cores. Goals (issue 3):
  weights 1:3 and 1:1:2:4 -> CPU shares within +-3% of the weights;
  max_percent 50 alone -> 50% of a core +-3 (and 20 -> 20 +-3, binding even
    when other load leaves the process less than half a core);
  min_percent 40 at weight 1 vs weight 10 -> >= 40% of a core;
  progress-handler overhead < 2% on one tenant (vs no handler, same run).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

MEASURE_CPU_S = 4.0


def workload(config):
    out = subprocess.run(
        [sys.executable, "-m", "tests.native.sched_workload", json.dumps(config)],
        capture_output=True, text=True, timeout=900, check=True,
    )
    return json.loads(out.stdout)


def saturated(tenants, **extra):
    config = {"tokens": 2, "quantum_ms": 10, "progress_ops": 1000, "rows": 400_000,
              "measure_cpu_s": MEASURE_CPU_S, "tenants": tenants, **extra}
    return workload(config)


@pytest.mark.parametrize("weights", [(1, 3), (1, 1, 2, 4)], ids=["1:3", "1:1:2:4"])
def test_weights_deliver_cpu_shares(benchmark, weights):
    tenants = [{"slot": i + 1, "shares": 1024 * w, "threads": 2} for i, w in enumerate(weights)]
    result = benchmark.pedantic(saturated, args=(tenants,), rounds=1, iterations=1)
    used = [result["used_ns"][str(t["slot"])] for t in tenants]
    shares = [u / sum(used) for u in used]
    wanted = [w / sum(weights) for w in weights]
    errors = [s / w - 1 for s, w in zip(shares, wanted)]
    benchmark.extra_info.update({"shares": [round(s, 4) for s in shares], "wanted": wanted,
                                 "relative_errors": [round(e, 4) for e in errors], "wall_s": round(result["wall_s"], 2)})
    print(f"\nweights {':'.join(map(str, weights))}: CPU shares {[round(s, 4) for s in shares]} "
          f"(want {[round(w, 4) for w in wanted]}), relative errors {[f'{e:+.1%}' for e in errors]}")
    assert all(abs(e) <= 0.03 for e in errors)


@pytest.mark.parametrize("cap", [50, 20])
def test_max_percent_alone(benchmark, cap):
    # "% of a core" is CPU over wall time, and other sessions share these 2
    # cores (from their own autogroups: nice does not help). A probe thread
    # outside the scheduler measures what the host gives one CPU-bound thread
    # meanwhile; the tenant's 2 threads could use twice that. The cap's lower
    # bound is only observable when that supply exceeds the cap.
    tenant = {"slot": 1, "shares": 1024, "threads": 2, "max_percent": cap}
    result = benchmark.pedantic(saturated, args=([tenant],), kwargs={"measure_cpu_s": 2.0 * cap / 50, "probe": True},
                                rounds=1, iterations=1)
    percent = 100 * result["used_ns"]["1"] / 1e9 / result["wall_s"]
    supply = 100 * 2 * result["probe_share"]
    stats = result["stats"]["1"]
    benchmark.extra_info.update({"percent_of_core": round(percent, 2), "host_supply_percent": round(supply, 1),
                                 "throttle_ratio": round(stats["throttle_ratio"], 3)})
    print(f"\nmax_percent {cap} alone: {percent:.2f}% of a core over {result['wall_s']:.1f}s "
          f"(host supply for 2 threads meanwhile {supply:.0f}%; throttled {stats['throttled_ns'] / 1e9:.2f}s, "
          f"throttle_ratio {stats['throttle_ratio']:.3f})")
    assert percent <= cap + 3
    if supply < cap * 1.3:
        pytest.skip(f"host supplies only {supply:.0f}% of a core to 2 threads now: cap {cap} not binding, lower bound unobservable")
    assert percent >= cap - 3


def test_min_percent_under_contention(benchmark):
    tenants = [{"slot": 1, "shares": 100, "min_percent": 40, "threads": 2},
               {"slot": 2, "shares": 1000, "threads": 2}]
    result = benchmark.pedantic(saturated, args=(tenants,), rounds=1, iterations=1)
    a, b = result["used_ns"]["1"], result["used_ns"]["2"]
    of_capacity = 100 * 2 * a / (a + b)  # % of one core, of the 2 cores the scheduler delivered
    of_wall = 100 * a / 1e9 / result["wall_s"]  # % of one core of wall time (host load lowers it)
    benchmark.extra_info.update({"percent_of_core_of_delivered": round(of_capacity, 2), "percent_of_core_wall": round(of_wall, 2),
                                 "weight_share_would_be": round(100 * 2 * 1 / 11, 2)})
    print(f"\nmin_percent 40 weight 1 vs weight 10: {of_capacity:.2f}% of a core of the delivered CPU "
          f"({of_wall:.2f}% of wall time; by weight alone it would be {200 / 11:.2f}%)")
    assert of_capacity >= 40


def test_progress_handler_overhead(benchmark):
    # Thread CPU time of one statement swings by tens of percent on these shared
    # cores (caches, SMT siblings), so 200 short rounds alternate between the
    # two connections and the goal is checked on the median per-round ratio.
    config = {"mode": "overhead", "tokens": 1, "progress_ops": 1000, "rows": 100_000, "statements": 1, "rounds": 200}
    result = benchmark.pedantic(workload, args=(config,), rounds=1, iterations=1)
    hooked, plain = result["cpu_s"]["hooked"], result["cpu_s"]["plain"]
    median = statistics.median(h / p for h, p in zip(hooked, plain))
    of_medians = statistics.median(hooked) / statistics.median(plain)
    best = min(hooked) / min(plain)
    benchmark.extra_info.update({"median_round_ratio": round(median, 4), "ratio_of_medians": round(of_medians, 4),
                                 "best_round_ratio": round(best, 4), "goal": "< 1.02"})
    print(f"\nscheduler + progress handler every 1000 ops vs none, one tenant: cpu time ratio {median:.4f} "
          f"(median of {len(hooked)} alternating rounds; ratio of medians {of_medians:.4f}, "
          f"of fastest rounds {best:.4f}); goal < 1.02")
    assert result["scheduled_cpu_ns"] > 0
    assert median < 1.02
