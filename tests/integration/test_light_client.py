"""Real processes: `exchange-node light status|book|trades|order|fills` believes no node. Four validators; one honest
node and, in front of another, proxies that each lie one way (forged signatures, too few signatures, an old header
served as the latest, a validator-set change nobody certified, another chain's genesis; a changed book level, an
invented trade, a hidden fill, a proved book whose certificate is forged), every client at once. Every lie is
refused with the lying node named, and the answer comes, verified, from the witness; asked alone, a header liar
gets exit 1 and one line.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import msgpack

from exchange.commitments.hashing import leaf_hash, value_digest
from exchange.commitments.proofs import Branch, Hidden, LeafValue, Node, Proof
from tests.harness import ROOT, Cluster, NodeProcess, wait_until

Lie = Callable[[str, dict[str, Any]], dict[str, Any]]


def _unpacked(text: str) -> Any:
    return msgpack.unpackb(base64.b64decode(text), raw=False)


def _packed(value: Any) -> str:
    return base64.b64encode(msgpack.packb(value, use_bin_type=True)).decode()


class LyingNode:
    """An HTTP proxy in front of a real node's API that rewrites the light client's answers with `lie`."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.lie: Lie | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:     # the name http.server calls
                status, body = proxy.node.api("GET", self.path)
                if proxy.lie is not None and status == 200:
                    body = proxy.lie(self.path, body)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _light_args(tmp: Path, nodes: tuple[str, ...], max_age: float, read: tuple[str, ...],
                token: str | None) -> list[str]:
    return [sys.executable, "-m", "node.cli", "light", *read, "--node", nodes[0],
            *[a for w in nodes[1:] for a in ("--witness", w)], "--trust-dir", str(tmp), "--max-age", str(max_age),
            "--json", *(["--token", token] if token else [])]


def light(tmp: Path, *nodes: str, max_age: float = 30.0, read: tuple[str, ...] = ("status",),
          token: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_light_args(tmp, nodes, max_age, read, token), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def lights(tmp: Path, runs: list[tuple[tuple[str, ...], tuple[str, ...], float]],
           token: str | None) -> list[subprocess.CompletedProcess]:
    """Several `light` commands ([(nodes, read, max age)]) at once, as several users would run them: most of each
    one's time is waiting (on the nodes, and on the block that certifies a proved answer)."""
    started = [subprocess.Popen(_light_args(tmp, nodes, max_age, read, token), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for nodes, read, max_age in runs]
    done = []
    for process in started:
        out, err = process.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def _with_first_leaf(node: Node, change: Callable[[LeafValue], Node]) -> tuple[Node, bool]:
    """`node` with its first revealed leaf (in key order) replaced by `change(leaf)`."""
    if isinstance(node, LeafValue):
        return change(node), True
    if isinstance(node, Branch):
        left, done = _with_first_leaf(node.left, change)
        if done:
            return Branch(node.bit, node.prefix, left, node.right), True
        right, done = _with_first_leaf(node.right, change)
        return Branch(node.bit, node.prefix, node.left, right), done
    return node, False


def _proof_changed(text: str, change: Callable[[LeafValue], Node]) -> str:
    proof = Proof.decode(base64.b64decode(text))
    assert proof.node is not None
    return base64.b64encode(Proof(_with_first_leaf(proof.node, change)[0]).encode()).decode()


def changed_level(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The best bid shown twice as large, in the answer and in the proof's leaf (a liar keeping them consistent)."""
    if path.startswith("/book/") and body.get("bids"):
        price, qty = body["bids"][0]
        body["bids"][0] = [price, str(2 * float(qty))]
        lots, orders = msgpack.unpackb(_first_leaf(body["proofs"][2]).value)
        body["proofs"][2] = _proof_changed(body["proofs"][2], lambda leaf: LeafValue(
            leaf.key, msgpack.packb([2 * lots, orders])))
    return body


def _first_leaf(text: str) -> LeafValue:
    found: list[LeafValue] = []

    def keep(leaf: LeafValue) -> Node:
        found.append(leaf)
        return leaf
    proof = Proof.decode(base64.b64decode(text))
    assert proof.node is not None
    _with_first_leaf(proof.node, keep)
    return found[0]


def invented_trade(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if "/fills" in path and "limit=100" in path and body.get("fills"):
        body["fills"].insert(0, {**body["fills"][0], "id": "invented:trade", "qty": "5"})
    return body


def hidden_fill(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The newest fill left out of the answer and its leaf shown only by its hash."""
    if "/fills" in path and "limit=99" in path and body.get("fills"):
        body["fills"].pop(0)
        body["proofs"][2] = _proof_changed(body["proofs"][2], lambda leaf: Hidden(
            leaf_hash(leaf.key, value_digest(leaf.value))))
    return body


def forged_signatures(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Every signature of a header's commit changed, and of the commit a proved read carries."""
    certificate = body if path.startswith("/chain/headers/") else body.get("certified_by")
    if isinstance(certificate, dict):
        height, round_, block_id, sigs = _unpacked(certificate["commit"])
        certificate["commit"] = _packed([height, round_, block_id, [[i, bytes(b ^ 1 for b in s)] for i, s in sigs]])
    return body


def too_few_signatures(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.startswith("/chain/headers/"):
        height, round_, block_id, sigs = _unpacked(body["commit"])
        body["commit"] = _packed([height, round_, block_id, sigs[:2]])      # four validators: a quorum is three
    return body


def uncertified_set_change(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path == "/chain/epochs":          # the set change to four validators, its certificate's signatures forged
        block, (height, round_, block_id, sigs) = _unpacked(body["proofs"][-1])
        body["proofs"][-1] = _packed([block, [height, round_, block_id, [[i, bytes(b ^ 1 for b in s)] for i, s in sigs]]])
    return body


def another_chain(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path == "/chain/genesis":
        genesis = _unpacked(body["genesis"])
        genesis[2] += 1                                 # another founding time: a genesis of another chain
        body["genesis"] = _packed(genesis)
    return body


def test_the_light_client_refuses_every_lie_names_the_node_and_answers_from_the_witness(cluster: Cluster,
                                                                                         tmp_path: Path):
    nodes = cluster.chain(4)
    honest, lied_about = nodes[0], nodes[1]
    seated = honest.status()["height"]          # the block seating the four was decided by the founder alone
    wait_until(lambda: honest.get("/chain/headers/latest")["height"] > seated + 1, 20,
               message="a block decided by the four validators")
    liars: list[LyingNode] = []
    try:
        first = light(tmp_path / "honest", honest.api_url, lied_about.api_url)
        assert first.returncode == 0, first.stderr
        answer = json.loads(first.stdout)
        assert answer["verified"] and answer["validators"] == 4 and answer["signatures_checked"] >= 3, answer
        assert answer["trust_learnt_now"] and answer["chain_id"] == honest.status()["chain_id"], answer
        assert answer["witnesses_agreeing"] == [lied_about.api_url] and not answer["refused"], answer

        status, bought = honest.api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "price": "100", "qty": "2"})
        assert status == 201, bought
        status, sold = lied_about.api("POST", "/orders", {"market": "BTC-USD", "side": "sell", "price": "100",
                                                          "qty": "1"})
        assert status == 201, sold
        buyer, order_id = bought["order"]["account"], bought["order"]["id"]
        token = honest.api_token       # a liar's proxy sends its own node's

        one = honest.get("/chain/headers/1")
        wait_until(lambda: time.time() * 1000 - _unpacked(one["header"])[2] > 4000, 10, message="height 1 is 4 s old")

        def old_latest(path: str, body: dict[str, Any]) -> dict[str, Any]:
            return one if path == "/chain/headers/latest" else body

        def state_lies(path: str, body: dict[str, Any]) -> dict[str, Any]:   # which one: by the path asked
            return hidden_fill(path, invented_trade(path, changed_level(path, body)))

        # each lie from a proxy of its own, every client at once: (what, lie, the reason named, the read)
        lies: list[tuple[str, Lie, str, tuple[str, ...]]] = [
            ("forged signatures", forged_signatures, "bad_certificate", ("status",)),
            ("a proved book whose certificate is forged", forged_signatures, "bad_certificate",
             ("book", "BTC-USD", "--depth", "3")),
            ("too few signatures", too_few_signatures, "bad_certificate", ("status",)),
            ("an old header as the latest", old_latest, "stale", ("status",)),
            ("a set change nobody certified", uncertified_set_change, "bad_epoch_proof", ("status",)),
            ("another chain's genesis", another_chain, "other_chain", ("status",)),
            ("a changed book level", state_lies, "bad_proof", ("book", "BTC-USD")),
            ("an invented trade", state_lies, "lie", ("fills", buyer, "--limit", "100")),
            ("a hidden fill", state_lies, "bad_proof", ("fills", buyer, "--limit", "99")),
        ]
        for _, lie, _, _ in lies:
            liars.append(LyingNode(lied_about))
            liars[-1].lie = lie
        runs: list[tuple[tuple[str, ...], tuple[str, ...], float]] = [
            ((honest.api_url,), ("status",), 30.0), ((honest.api_url,), ("order", order_id), 30.0),
            ((honest.api_url,), ("trades", "BTC-USD"), 30.0),
            *[((proxy.url, honest.api_url), read, 3.0) for proxy, (_, _, _, read) in zip(liars, lies)],
            *[((proxy.url,), read, 3.0) for proxy, (_, _, _, read) in zip(liars, lies) if read == ("status",)]]
        again, order, trades, *done = lights(tmp_path / "honest", runs, token)
        assert again.returncode == 0 and not json.loads(again.stdout)["trust_learnt_now"], again.stderr
        assert order.returncode == 0, order.stderr
        proved = json.loads(order.stdout)
        assert proved["order"]["status"] == "partially_filled" and proved["verified"], proved
        assert proved["certified_by"] == proved["height"] + 1 and proved["signatures_checked"] >= 3, proved
        assert trades.returncode == 0 and json.loads(trades.stdout)["trades"] == [], trades.stderr   # its block is past
        alone_runs = iter(done[len(lies):])         # a header liar asked alone: exit 1 and one line
        for (what, _, reason, read), proxy, witnessed in zip(lies, liars, done):
            assert witnessed.returncode == 0, (what, witnessed.stderr)
            answer = json.loads(witnessed.stdout)
            assert answer["node"] == honest.api_url and answer["verified"], (what, answer)
            assert {r["node"]: r["reason"] for r in answer["refused"]} == {proxy.url: reason}, (what, answer["refused"])
            assert f"refused {proxy.url}" in witnessed.stderr, (what, witnessed.stderr)
            if read[0] == "book":
                assert answer["bids"][0] == ["100.00", "1.0000"], answer
            if read[0] == "fills":
                assert [f["qty"] for f in answer["fills"]] == ["1.0000"] and answer["fills"][0]["buyer"] == buyer
            if read == ("status",):
                alone = next(alone_runs)
                lines = alone.stderr.strip().splitlines()
                assert alone.returncode == 1 and len(lines) == 1 and proxy.url in lines[0], (what, alone.stderr)
                assert not alone.stdout, (what, alone.stdout)
    finally:
        for proxy in liars:
            proxy.close()


def test_the_trust_root_is_never_replaced_silently(cluster: Cluster, tmp_path: Path):
    ours, = cluster.chain(1)
    theirs = cluster.node("other", found_after=0, network_id="another-network")
    wait_until(lambda: theirs.status()["chain_id"], 10)
    assert light(tmp_path, ours.api_url).returncode == 0
    other = light(tmp_path, theirs.api_url)
    assert other.returncode == 1 and "nothing verified" in other.stderr and "other_chain" not in other.stdout
    assert "not the trusted" in other.stderr, other.stderr
    trusted = json.loads((tmp_path / "trust.json").read_text())["chain_id"]
    assert trusted == ours.status()["chain_id"]
    pinned = subprocess.run([sys.executable, "-m", "node.cli", "light", "status", "--node", theirs.api_url,
                             "--trust", theirs.status()["chain_id"], "--trust-dir", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert pinned.returncode == 1 and "move that file aside" in pinned.stderr, pinned.stderr
    assert urllib.request.urlopen(f"{ours.api_url}/chain/genesis", timeout=5).status == 200   # public, no token
