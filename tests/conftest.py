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


# ---- a real rustymt daemon (tests/daemon.py), appended by api-core


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory):
    """One `rustymt serve` per test module: .port, .base_url, .admin_token, .request(...)."""
    from tests.daemon import Daemon

    daemon = Daemon.start(str(tmp_path_factory.mktemp("rustymtd") / "data"))
    yield daemon
    daemon.stop()


@pytest.fixture
def daemon_factory(tmp_path):
    """start(env=None, data_dir=None) -> Daemon; every daemon started is stopped at teardown."""
    from tests.daemon import Daemon

    started = []

    def start(env=None, data_dir=None):
        daemon = Daemon.start(data_dir or str(tmp_path / f"data{len(started)}"), env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="session", autouse=True)
def _no_daemon_outlives_the_run():
    """Stop any daemon a test started and did not stop (a leak would hold ports and CPU)."""
    yield
    from tests.daemon import STARTED

    for daemon in STARTED:
        daemon.kill()


def examples(count: int) -> int:
    """Hypothesis example count, scaled down by RUSTYMT_EXAMPLES_SCALE (the
    sanitizer run sets it: instrumented native code runs several times slower)."""
    scale = float(os.environ.get("RUSTYMT_EXAMPLES_SCALE", "1"))
    return max(10, int(count * scale))


@pytest.fixture(scope="session", autouse=True)
def _native_build_is_the_expected_one():
    """Under scripts/test-sanitized the instrumented extension must be the one loaded."""
    expected = os.environ.get("RUSTYMT_EXPECT_NATIVE_DIR")
    if expected:
        import rustymt._native._core as core

        assert os.path.realpath(core.__file__).startswith(os.path.realpath(expected)), core.__file__
    yield
