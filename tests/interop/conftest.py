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

The fixtures are defined in `grenache_harness.py` next to this file, so any other conftest can
import them. Since tests/ is a package, from tests/integration/conftest.py or tests/conftest.py:

    from tests.interop.grenache_harness import grapes, node_worker, require_node  # noqa: F401

(Without the package layout: put tests/interop on sys.path and `from grenache_harness import ...`,
as this file does.)

Plain helpers in the same module:
`GrapeCluster`, `NodeWorker`, `run_node_json` / `arun_node_json` (run js/lookup.js, js/client.js or
js/bench_client.js and return their JSON; use the async one when the script calls a server that
runs in the test's own event loop), `node_missing_reason`.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grenache_harness import grapes, node_worker, require_node  # noqa: F401 - fixtures
