"""One real daemon (tests/daemon.py) shared by the GraphQL tests.

Every test creates its own tenants with unique names (client.unique), so the
tests do not depend on each other's order.
"""
from __future__ import annotations

import pytest

from tests.daemon import Daemon

# Short periods and a small per-socket operation cap, so each is observable quickly.
DAEMON_ENV = {"RUSTYMT_GRAPHQL_USAGE_INTERVAL_SECONDS": "0.2", "RUSTYMT_GRAPHQL_CONNECTION_INIT_TIMEOUT_SECONDS": "1",
              "RUSTYMT_GRAPHQL_MAX_OPERATIONS_PER_SOCKET": "5"}


@pytest.fixture(scope="package")
def daemon(tmp_path_factory):
    instance = Daemon.start(str(tmp_path_factory.mktemp("graphql") / "data"), env=DAEMON_ENV)
    yield instance
    code = instance.stop()
    assert code == 0, instance.log()

