"""Fixtures for the native core tests: the engine's hooks installed once per
process, and a fresh tenant slot per test so counters never mix."""
from __future__ import annotations

import itertools

import pytest

from rustymt._native import _core

_slots = itertools.count(200)


@pytest.fixture(scope="session", autouse=True)
def installed():
    """The pool and the allocator are in the engine's SQLite before anything opens."""
    _core.install()
    _core.canary()
    return _core.settings()


@pytest.fixture
def slot():
    """A tenant slot no other test uses, with its counters at zero."""
    n = next(_slots)
    assert n < _core.MAX_TENANTS, "tests ran out of tenant slots"
    _core.reset_tenant_stats(n)
    _core.set_partition(n, 0, 0)
    _core.set_memory_quota(n, 0)
    yield n
    _core.set_memory_quota(n, 0)
    _core.set_partition(n, 0, 0)
