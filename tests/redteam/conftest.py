"""Red-team fixtures: one chain of real nodes per test module (attacks use their own keys and identities, so
they do not disturb each other), and the `integration` marker these tests carry."""
from __future__ import annotations

import pytest

from tests.harness import Cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: runs real exchange-node processes")


@pytest.fixture(scope="module")
def chain3(tmp_path_factory):
    """Three validators on one chain (quorum 3 of 3), heartbeats fast enough to notice a dropped link in 0.6 s."""
    cluster = Cluster(tmp_path_factory.mktemp("redteam"))
    try:
        yield cluster.chain(3, heartbeat_interval=0.2, debug_api="false")
    finally:
        cluster.close()
