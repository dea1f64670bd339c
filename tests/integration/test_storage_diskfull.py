"""A full disk under one validator of four (its DATA_DIR/chain on a small tmpfs the test mounts): its orders
are answered 507 insufficient_storage with Retry-After (never a 500), /ready says why, nothing whose write
failed ever reaches a block, the three others keep finalising, and once space returns the node catches up
and takes orders again by itself, with no restart; restarted afterwards its logs open with no damage."""
from __future__ import annotations

import hashlib
import random
import time
from typing import Any

from exchange.crypto import SigningKey
from exchange.app.txs import NewOrderOp, SignedTx, sign_tx
from tests.diskfull import mounted_small_disk
from tests.harness import Cluster, NodeProcess, converged, wait_until
from tests.integration.answers import Answers, random_order

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


class Client:
    """A user with their own key: order ids are known before sending, so a refused one can be looked for."""

    def __init__(self, chain_id: str, seed: str) -> None:
        self.key = SigningKey(hashlib.sha256(seed.encode()).digest())
        self.chain_id = chain_id
        self.sent = 0

    def order(self, rng: random.Random) -> SignedTx:
        self.sent += 1
        spec = random_order(rng)
        op = NewOrderOp(spec["market"], spec["side"], "limit", spec["price"], spec["qty"], None)
        return sign_tx(self.key.sign, self.key.public_key, self.chain_id, f"o{self.sent}",
                       int(time.time() * 1000) + 60_000, [op])


def height(node: NodeProcess) -> int:
    """The height the node has applied (a node that cannot store blocks follows the chain in memory)."""
    return node.status()["height"]


def test_a_full_disk_is_answered_507_and_recovered_from_without_a_restart(cluster: Cluster, tmp_path):
    with mounted_small_disk(tmp_path / "n3" / "chain", 4 * 1024 * 1024) as disk:
        nodes = cluster.chain(4, **FAST)
        full, others = nodes[3], nodes[:3]
        rng = random.Random(507)
        answers = Answers()
        client = Client(full.status()["chain_id"], "disk-full-client")
        for node in nodes:
            code, body = answers.post_signed(node, client.order(rng), wait=2.0)
            assert code == 201, (node.name, code, body)

        disk.fill()
        refused = 0
        deadline = time.monotonic() + 30
        while refused < 20 and time.monotonic() < deadline:
            code, body = answers.post_signed(full, client.order(rng), wait=1.0)
            if code == 507:
                refused += 1
                assert body["error"]["code"] == "insufficient_storage", body
            else:
                assert code in (201, 202), (code, body)      # a write that still fitted in an allocated page
        assert refused == 20, f"only {refused} orders refused on a full disk: {answers.codes}"
        status = full.status()["exchange"]
        assert status["disk_error"] is None or status["disk_error"]["kind"] == "no_space", status["disk_error"]
        ready_code, ready = full.api("GET", "/ready")
        assert ready_code == 503, ready

        stored_at = full.status()["storage"]["blocks"]["last_index"]
        start = height(others[0])
        for _ in range(10):
            code, body = answers.post_signed(rng.choice(others), client.order(rng), wait=2.0)
            assert code == 201, (code, body)
        assert height(others[0]) >= start + 5, "the other validators kept finalising"
        status = full.status()
        assert status["storage"]["blocks"]["last_index"] <= stored_at + 5, "blocks stored on a full disk?"
        assert (status["exchange"]["disk_error"] or {}).get("kind") == "no_space", status["exchange"]["disk_error"]

        disk.free()
        wait_until(lambda: full.status()["exchange"]["disk_error"] is None and converged(nodes), 60, interval=0.3,
                   message="the node resumes by itself once space returns")
        wait_until(lambda: full.api("GET", "/ready")[0] == 200, 30, message="ready again")
        for _ in range(5):
            code, body = answers.post_signed(full, client.order(rng), wait=2.0)
            assert code == 201, (code, body)
        assert "Retry-After" not in (body or {})
        wait_until(lambda: converged(nodes), 30, interval=0.3)
        answers.settle(nodes)
        assert not answers.problems, answers.problems[:10]
        assert len(answers.refused) == 20 and answers.codes[500] == 0

        assert full.stop() == 0
        full.start(p2p_port=full.p2p_port)
        text = full.log_tail(400)
        storage = full.status()["storage"]
        for part in ("blocks", "wal", "outbox"):
            assert storage[part]["damaged"] == [] and not storage[part]["tail_damaged"], (part, storage[part])
        assert "DAMAGE" not in text and "torn tail" not in text, text
        wait_until(lambda: converged(nodes), 30, interval=0.3)
        full.stop()


def test_retry_after_comes_with_507(cluster: Cluster, tmp_path):
    with mounted_small_disk(tmp_path / "n0" / "chain", 2 * 1024 * 1024) as disk:
        node = cluster.node("n0", found_after=0, **FAST)
        wait_until(lambda: node.status()["chain_id"], 10)
        disk.fill()
        import urllib.error
        import urllib.request
        for _ in range(20):
            request = urllib.request.Request(node.api_url + "/orders?wait=0", method="POST",
                                             data=b'{"market":"BTC-USD","side":"buy","price":"1","qty":"1"}',
                                             headers={"Content-Type": "application/json", **node.auth_headers()})
            try:
                urllib.request.urlopen(request, timeout=10).read()
            except urllib.error.HTTPError as exc:
                assert exc.code in (503, 507), exc.code
                if exc.code == 507:
                    assert int(exc.headers["Retry-After"]) >= 1
                    break
        else:
            raise AssertionError("no 507 on a full disk")
        node.stop()
