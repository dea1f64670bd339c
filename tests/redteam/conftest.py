"""Red-team fixtures: one chain of real nodes per test module (attacks use their own keys and identities, so
they do not disturb each other)."""
from __future__ import annotations

import pytest

from tests.harness import Cluster


@pytest.fixture(scope="module")
def chain3(tmp_path_factory):
    """Three validators on one chain (quorum 3 of 3), heartbeats fast enough to notice a dropped link in 0.6 s."""
    cluster = Cluster(tmp_path_factory.mktemp("redteam"))
    try:
        yield cluster.chain(3, seat_rule="any", heartbeat_interval=0.2, debug_api="false")
    finally:
        cluster.close()
