"""Promise 4 (ownership), attacked on three real validators through their control APIs: cancels and replaces of
another account's order through every node, signatures over other bytes, replays of signed orders and
cancels (one node and all three at once), transactions for another chain or outside the time window, and a
self-signed credit grant. Each test ends with a positive control (the owner can do what the attacker could
not), so a refusal that came from a broken feature rather than from the ownership check would fail it."""
from __future__ import annotations

import os
import threading
import time
from decimal import Decimal as D
from typing import Any

import pytest

from exchange.crypto import SigningKey
from exchange.app.txs import CancelOp, GrantOp, NewOrderOp, ReplaceOp, SignedTx, sign_tx
from tests.harness import NodeProcess, converged, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class Client:
    """An external client holding its own account key, signing as docs/signed-orders.md documents."""

    def __init__(self, chain_id: str) -> None:
        self.key = SigningKey(os.urandom(32))
        self.account = self.key.public_key.hex()
        self.chain_id = chain_id

    def tx(self, *ops: Any, account: bytes | None = None, chain_id: str | None = None,
           expires_in_ms: int = 60_000, nonce: str | None = None) -> SignedTx:
        return sign_tx(self.key.sign, account or self.key.public_key, chain_id or self.chain_id,
                       nonce or os.urandom(8).hex(), int(time.time() * 1000) + expires_in_ms, list(ops))


def new(side: str, price: str, qty: str, kind: str = "limit") -> NewOrderOp:
    return NewOrderOp.parse("BTC-USD", side, kind, price, qty, None)


def post(node: NodeProcess, tx: SignedTx | dict, wait: float = 5.0) -> tuple[int, Any]:
    body = tx.as_json() if isinstance(tx, SignedTx) else tx
    return node.api("POST", f"/orders?wait={wait}", {"signed": body}, timeout=wait + 10)


def order_everywhere(nodes: list[NodeProcess], order_id: str) -> list[dict]:
    return [n.get(f"/orders/{order_id}")["order"] for n in nodes]


def chain_id_of(nodes: list[NodeProcess]) -> str:
    return nodes[0].status()["chain_id"]


def same_book(nodes: list[NodeProcess]) -> None:
    wait_until(lambda: converged(nodes), 20, interval=0.2, message="every node holds the same book and trades")


def test_cancel_or_replace_of_another_accounts_order_is_refused_through_every_node(chain3):
    nodes = chain3
    alice, mallory = Client(chain_id_of(nodes)), Client(chain_id_of(nodes))
    placed = alice.tx(new("buy", "10.00", "1"))
    status, body = post(nodes[0], placed)
    assert status == 201 and body["order"]["status"] == "open", body
    order_id = placed.order_id(0)
    # an order the node's own operator placed (plain fields, signed with nodes[0]'s `default` account)
    status, body = nodes[0].api("POST", "/orders?wait=5", {"market": "BTC-USD", "side": "buy", "type": "limit",
                                                          "price": "11.00", "qty": "1"})
    assert status == 201, body
    operator_order = body["order"]["id"]

    for node in nodes:
        # DELETE with no key: only a node holding the owner's key may sign the cancel
        for target in (order_id, operator_order):
            if node is nodes[0] and target == operator_order:
                continue
            status, body = node.api("DELETE", f"/orders/{target}?wait=5")
            assert (status, body["error"]["code"]) == (403, "not_owner"), (node.name, target, status, body)
        # a cancel and a replace signed by another account
        for op in (CancelOp("BTC-USD", order_id), ReplaceOp("BTC-USD", order_id, "10.00", "5")):
            attack = mallory.tx(op)
            status, body = node.api("DELETE", f"/orders/{order_id}?wait=5", {"signed": attack.as_json()}) \
                if isinstance(op, CancelOp) else node.api("POST", "/orders/batch?wait=5", {"signed": attack.as_json()})
            code = body["error"]["code"] if status != 200 else body["results"][0]["error"]["code"]
            assert code == "not_owner", (node.name, op.name, status, body)
        # a cancel naming alice's account, signed with mallory's key
        forged = SignedTx(alice.chain_id, alice.key.public_key, "forged", int(time.time() * 1000) + 60_000,
                          (CancelOp("BTC-USD", order_id),), mallory.key.sign(b"anything"))
        forged = SignedTx(forged.chain_id, forged.account, forged.nonce, forged.expires, forged.ops,
                          mallory.key.sign(forged.signed_bytes))
        status, body = node.api("DELETE", f"/orders/{order_id}?wait=5", {"signed": forged.as_json()})
        assert (status, body["error"]["code"]) == (401, "bad_signature"), (node.name, status, body)

    for view in order_everywhere(nodes, order_id):
        assert view["status"] == "open" and D(view["remaining"]) == 1 and D(view["price"]) == 10, view
    assert all(v["status"] == "open" for v in order_everywhere(nodes, operator_order))
    same_book(nodes)

    # positive control: the owner's own signed cancel, through a node that does not hold her key
    status, body = nodes[2].api("DELETE", f"/orders/{order_id}?wait=5",
                                {"signed": alice.tx(CancelOp("BTC-USD", order_id)).as_json()})
    assert status == 200 and body["cancel"]["status"] == "done", body
    wait_until(lambda: all(v["status"] == "cancelled" for v in order_everywhere(nodes, order_id)), 10)


def test_a_signature_over_other_bytes_is_refused_and_leaves_no_order(chain3):
    nodes = chain3
    alice = Client(chain_id_of(nodes))
    genuine = alice.tx(new("sell", "500.00", "1"))
    tampered: list[dict[str, Any]] = []
    for field, value in (("qty", "100"), ("price", "1.00"), ("side", "buy")):
        body: Any = genuine.as_json()       # JSON to tamper with
        body["ops"][0][field] = value
        tampered.append(body)
    for key in ("nonce", "expires"):
        body = genuine.as_json()
        body[key] = "other" if key == "nonce" else body[key] + 1
        tampered.append(body)
    body = genuine.as_json()
    body["account"] = Client(alice.chain_id).account        # the signature moved to another account
    tampered.append(body)
    for index, body in enumerate(tampered):
        node = nodes[index % len(nodes)]
        status, answer = post(node, body)
        assert (status, answer["error"]["code"]) == (401, "bad_signature"), (index, status, answer)
        signed_text = SignedTx.from_json(body).signed_bytes
        assert signed_text != genuine.signed_bytes
        tampered_id = SignedTx.from_json(body).order_id(0)
        assert all(n.api("GET", f"/orders/{tampered_id}")[0] == 404 for n in nodes), index
    # positive control: the untouched transaction is accepted
    status, answer = post(nodes[1], genuine)
    assert status == 201 and D(answer["order"]["qty"]) == 1 and answer["order"]["side"] == "sell", answer
    same_book(nodes)


def test_a_replayed_signed_order_fills_once_even_when_sent_to_every_node_at_once(chain3):
    nodes = chain3
    bob, alice = Client(chain_id_of(nodes)), Client(chain_id_of(nodes))
    resting = bob.tx(new("sell", "20.00", "3"))
    assert post(nodes[0], resting)[0] == 201
    taker = alice.tx(new("buy", "20.00", "1"))
    answers: list[tuple[int, Any]] = []
    go = threading.Barrier(len(nodes))

    def send(node: NodeProcess) -> None:
        go.wait()
        answers.append(post(node, taker))
    threads = [threading.Thread(target=send, args=(n,)) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    codes = sorted(status for status, _ in answers)
    assert len(codes) == 3 and all(c in (201, 202, 422) for c in codes), answers
    assert any(c in (201, 202) for c in codes), answers
    for status, body in answers:
        if status == 422:
            assert body["error"]["code"] == "duplicate", body
    wait_until(lambda: all(v["status"] == "filled" for v in order_everywhere(nodes, taker.order_id(0))), 10)
    # later replays through every node: refused as duplicates, nothing more fills
    for node in nodes:
        status, body = post(node, taker)
        assert (status, body.get("error", {}).get("code")) == (422, "duplicate"), (node.name, status, body)
    for view in order_everywhere(nodes, resting.order_id(0)):
        assert D(view["remaining"]) == 2 and D(view["filled"]) == 1, view
    same_book(nodes)
    trades = [t for t in nodes[0].get("/trades/BTC-USD?limit=10000")["trades"]
              if t["taker_order_id"] == taker.order_id(0)]
    assert len(trades) == 1 and D(trades[0]["qty"]) == 1, trades

    # a replayed cancel: applied once; the replay is refused and the account's next order is untouched
    cancel = bob.tx(CancelOp("BTC-USD", resting.order_id(0)))
    status, body = nodes[1].api("DELETE", f"/orders/{resting.order_id(0)}?wait=5", {"signed": cancel.as_json()})
    assert status == 200 and body["cancel"]["status"] == "done", body
    for node in nodes:
        status, body = node.api("POST", "/orders/batch?wait=2", {"signed": cancel.as_json()})
        assert status == 200 and body["results"][0]["error"]["code"] == "duplicate", (node.name, body)
    same_book(nodes)


def test_transactions_for_another_chain_or_outside_the_time_window_are_refused(chain3):
    nodes = chain3
    alice = Client(chain_id_of(nodes))
    cases = {
        "wrong_chain": alice.tx(new("buy", "5.00", "1"), chain_id="ab" * 32),
        "expired": alice.tx(new("buy", "5.00", "1"), expires_in_ms=-1_000),
        "expires_too_far": alice.tx(new("buy", "5.00", "1"), expires_in_ms=3_600_000),
    }
    for index, (code, tx) in enumerate(cases.items()):
        node = nodes[index % len(nodes)]
        status, body = post(node, tx)
        assert (status, body["error"]["code"]) == (422, code), (code, status, body)
        assert all(n.api("GET", f"/orders/{tx.order_id(0)}")[0] == 404 for n in nodes), code
    # a credit grant signed by an ordinary account (the network has no credit authority by default)
    grant = alice.tx(GrantOp(alice.account, "USD", "1000000"))
    status, body = nodes[0].api("POST", "/orders/batch?wait=2", {"signed": grant.as_json()})
    assert status == 200 and body["results"][0]["error"]["code"] in ("credit_disabled", "not_authority"), body
    status, body = nodes[0].api("GET", f"/accounts/{alice.account}")
    assert status in (200, 404) and "1000000" not in str(body), body
    same_book(nodes)
