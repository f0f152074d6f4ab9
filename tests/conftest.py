"""Shared test helpers: host-feature gating and waiting on conditions.

Host tests need root and kernel features. Where one is missing they skip with
the reason; with RUSTYMT_REQUIRE_HOST=1 (CI) the skip becomes a failure.
"""
from __future__ import annotations

import os
import time

import pytest

REQUIRE_HOST = os.environ.get("RUSTYMT_REQUIRE_HOST") == "1"


def require_host(available: bool, reason: str) -> None:
    """Skip (or fail under RUSTYMT_REQUIRE_HOST=1) when a host feature is missing."""
    if available:
        return
    if REQUIRE_HOST:
        pytest.fail(f"host feature required but missing: {reason}")
    pytest.skip(reason)


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll `condition()` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline-bounded wait, not synchronisation
