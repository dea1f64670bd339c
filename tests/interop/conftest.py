"""Fixtures for tests that need real Grenache (Node.js): `grapes`, `node_worker`, `require_node`.

Where the processes run (decided after trying both): on the HOST loopback, not in a network
namespace. A process inside a namespace is not reachable from the host's 127.0.0.1, and the
Python nodes that integration tests start on the host must reach the grape HTTP API. What keeps
all traffic on loopback instead: grapes start through `js/grape.js`, the stock `grape` CLI with
its DHT UDP socket bound to 127.0.0.1 (stock grape binds every interface), `--b 127.0.0.1` for the
HTTP API, `--bn` listing only loopback peers, plus `--dpa` and `--check_maxPayloadSize`; Node
workers listen on 127.0.0.1. Each fixture ends exactly the processes it started, by PID, also
when the test fails.

When node or the npm packages are missing these tests are skipped with the reason, except under
CI=true, where that is a failure (the Makefile's `make test` installs them).

Using them from another directory (e.g. tests/integration/): import the fixtures into that
directory's conftest.py, `from tests.interop.conftest import grapes, node_worker, require_node`,
with the repository root on sys.path (it is under `python -m pytest` from the root), or move this
file's fixtures to tests/conftest.py. Plain helpers are in `tests/interop/grenache_harness.py`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grenache_harness import GrapeCluster, NodeWorker, node_missing_reason  # noqa: E402


@pytest.fixture(scope="session")
def require_node() -> None:
    """Skip (or fail under CI=true) when Node.js or the grenache npm packages are not installed."""
    reason = node_missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but Grenache interop cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def grapes(require_node) -> Iterator[GrapeCluster]:
    """Two real grapes on free loopback ports, bootstrapped to each other and answering.

    The value behaves as the list of their HTTP URLs (`grapes[0]`, `list(grapes)`); it also has
    `.stop()` and `.start()` (same ports again, empty DHT), `.restart()`, `.pids`, `.dht_ports`.
    """
    cluster = GrapeCluster(2)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def node_worker(require_node) -> Iterator[Callable[..., NodeWorker]]:
    """Factory: `node_worker(grape_url, service, worker_id=...)` starts js/worker.js and waits until
    its first announce succeeded (`.port` is then set). All workers stop at teardown."""
    started: list[NodeWorker] = []

    def start(grape_url: str, service: str, **kwargs) -> NodeWorker:
        worker = NodeWorker(grape_url, service, **kwargs)
        started.append(worker)
        worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
