"""A mergeable latency sketch (DDSketch, Masson et al., VLDB 2019).

Values are bucketed on a logarithmic grid: bucket k holds the values in
(gamma^(k-1), gamma^k] with gamma = (1 + a) / (1 - a). Answering a quantile
with the bucket's midpoint 2 * gamma^k / (gamma + 1) is within relative
error `a` of the true sample at that rank, for every quantile, whatever the
distribution. We use a = 0.005, half the ±1 % the SLA needs at p99.

Two sketches with the same accuracy merge by adding bucket counts, so the
engine can keep one per tenant per instance, the daemon can add instances,
and an hour's sketch is the sum of its samples' — and `subtract` gives the
sketch of what happened between two snapshots of a monotonic sketch.
Memory is bounded: latencies from 1 µs to 1 h need ~2200 buckets; values
below MIN_VALUE count as zero, and beyond MAX_BUCKETS the lowest buckets are
folded together (only the low tail loses accuracy, never p99).

    sketch = LatencySketch()
    sketch.add(12.5)                 # milliseconds
    sketch.quantile(0.99)
    LatencySketch.from_dict(sketch.to_dict())
"""
from __future__ import annotations

import bisect
import itertools
import math
from typing import Any

RELATIVE_ACCURACY = 0.005
MIN_VALUE = 1e-6  # below this a value counts in the zero bucket
MAX_BUCKETS = 4096


class LatencySketch:
    __slots__ = ("alpha", "gamma", "_log_gamma", "bins", "zero_count", "count", "total")

    def __init__(self, alpha: float = RELATIVE_ACCURACY):
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self._log_gamma = math.log(self.gamma)
        self.bins: dict[int, int] = {}
        self.zero_count = 0
        self.count = 0
        self.total = 0.0  # sum of values, for the mean

    def key(self, value: float) -> int:
        return math.ceil(math.log(value) / self._log_gamma)

    def add(self, value: float, count: int = 1) -> None:
        if value != value or value < 0:  # NaN or negative: a caller bug, not a latency
            raise ValueError(f"latency must be >= 0, got {value!r}")
        if value < MIN_VALUE:
            self.zero_count += count
        else:
            key = self.key(value)
            self.bins[key] = self.bins.get(key, 0) + count
            if len(self.bins) > MAX_BUCKETS:
                self._fold_lowest()
        self.count += count
        self.total += value * count

    def _fold_lowest(self) -> None:
        low = sorted(self.bins)[: len(self.bins) - MAX_BUCKETS + 1]
        target = low[-1]
        self.bins[target] = sum(self.bins.pop(key) for key in low[:-1]) + self.bins[target]

    def merge(self, other: "LatencySketch") -> None:
        if other.alpha != self.alpha:
            raise ValueError("sketches of different accuracy do not merge")
        for key, count in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + count
        self.zero_count += other.zero_count
        self.count += other.count
        self.total += other.total
        while len(self.bins) > MAX_BUCKETS:
            self._fold_lowest()

    def subtract(self, earlier: "LatencySketch") -> "LatencySketch | None":
        """What was added since `earlier` (a snapshot of this same sketch), or None
        when `earlier` is not a prefix of us (the source restarted)."""
        delta = LatencySketch(self.alpha)
        for key, count in self.bins.items():
            remaining = count - earlier.bins.get(key, 0)
            if remaining < 0:
                return None
            if remaining:
                delta.bins[key] = remaining
        if any(key not in self.bins for key in earlier.bins):
            return None
        delta.zero_count = self.zero_count - earlier.zero_count
        delta.count = self.count - earlier.count
        delta.total = max(0.0, self.total - earlier.total)
        if delta.zero_count < 0 or delta.count < 0:
            return None
        return delta

    def quantile(self, q: float) -> float:
        """The value at quantile q (0..1); 0.0 for an empty sketch."""
        if not 0 <= q <= 1:
            raise ValueError("quantile must be within 0..1")
        if self.count == 0:
            return 0.0
        rank = q * (self.count - 1)  # 0-based rank, as numpy's "lower" interpolation
        seen = self.zero_count
        if rank < seen:
            return 0.0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen > rank:
                return 2 * self.gamma ** key / (self.gamma + 1)
        return 2 * self.gamma ** max(self.bins) / (self.gamma + 1)

    def count_at_most(self, value: float) -> int:
        """How many values are <= value (to within one bucket): Prometheus buckets."""
        if value < MIN_VALUE:
            return self.zero_count
        limit = self.key(value)
        return self.zero_count + sum(count for key, count in self.bins.items() if key <= limit)

    def cumulative(self, bounds) -> list[int]:
        """count_at_most for each of the ascending `bounds` (one sort, one bisect each)."""
        keys = sorted(self.bins)
        prefix = list(itertools.accumulate((self.bins[key] for key in keys), initial=self.zero_count))
        return [prefix[bisect.bisect_right(keys, self.key(bound))] if bound >= MIN_VALUE else self.zero_count
                for bound in bounds]

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "zero": self.zero_count, "count": self.count, "total": self.total,
                "bins": [[key, count] for key, count in sorted(self.bins.items())]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencySketch":
        sketch = cls(float(data.get("alpha", RELATIVE_ACCURACY)))
        sketch.zero_count = int(data.get("zero", 0))
        sketch.bins = {int(key): int(count) for key, count in data.get("bins", ())}
        sketch.count = int(data.get("count", sketch.zero_count + sum(sketch.bins.values())))
        sketch.total = float(data.get("total", 0.0))
        return sketch
