"""GET /health and /ready on a real node, and systemd's Type=notify protocol against a socket the
test binds: READY=1 comes only once the API answers, STOPPING=1 when shutdown begins, WATCHDOG=1
while the loop runs."""
from __future__ import annotations

import json
import os
import socket
import urllib.request

import pytest

from tests.harness import wait_until


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_and_readiness_with_named_checks(cluster):
    node = cluster.node("a", found_after=3.0)     # listens 3 s for an existing network before founding one
    status, health = get(node.api_url + "/health")
    assert status == 200 and health["status"] == "ok" and health["uptime_seconds"] >= 0
    status, ready = get(node.api_url + "/ready")
    assert status == 503 and ready["ready"] is False and ready["failing"] == ["chain"]
    assert [c["name"] for c in ready["checks"]] == ["api", "p2p", "chain"]
    assert "not on a chain yet" in next(c["detail"] for c in ready["checks"] if c["name"] == "chain")
    wait_until(lambda: get(node.api_url + "/ready")[0] == 200, 20, message="ready once it founded its chain")
    status, ready = get(node.api_url + "/ready")
    assert ready["ready"] is True and ready["failing"] == [] and all(c["ok"] for c in ready["checks"])
    status, health = get(node.api_url + "/health")
    assert health["loop_lag"]["last_seconds"] is not None and health["loop_lag"]["max_10s_seconds"] < 5


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    yield str(path), sock
    sock.close()


def test_systemd_notify_ready_after_the_api_answers_then_stopping(cluster, notify_socket):
    path, sock = notify_socket
    node = cluster.node("a", start=False)
    node.env_extra = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    node.start(wait=False)
    first = sock.recv(4096).decode()
    assert first.startswith("READY=1\nSTATUS=node ") and " peers" in first
    api = json.loads((node.data_dir / "node.json").read_text())["api"]    # written before READY=1 ...
    assert get(api + "/health")[0] == 200                                  # ... and the API answers at once
    node.wait_ready()
    watchdog = [sock.recv(4096) for _ in range(3)]
    assert watchdog == [b"WATCHDOG=1"] * 3
    assert node.stop() == 0
    rest = []
    while True:
        datagram = sock.recv(4096)
        if datagram != b"WATCHDOG=1":
            rest.append(datagram)
            break
    assert rest == [b"STOPPING=1\nSTATUS=stopping"]
    assert os.path.exists(path)
