"""Control API for orders, in process (aiohttp test server, standalone exchange): the error code of each
invalid body, the happy paths, and a property test that no JSON body can crash the node."""
from __future__ import annotations

import asyncio
import time
import types

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.crypto import SigningKey
from exchange.chain.api_door import ChainApi
from exchange.chain.service import ChainService
from exchange.chain.store.block_store import ChainStore
from exchange.app.txs import CancelOp, NewOrderOp, sign_tx
from node.accounts import AccountStore
from node.api.orders import BOOK_DIGEST_BUDGET
from node.api.server import build_app
from node.configs import ApiConfig
from node.identity import NodeIdentity
from p2p.public.refusals import RefusalLog


TOKEN = "test-token-0123456789"
ACCOUNTS = ("default", "maker", "taker", "batch", "other")


class NoNetwork:
    """A node alone: nothing to send to, nobody to call."""

    def send(self, node_id, message): pass
    def broadcast(self, message): pass
    def penalize(self, node_id, points, reason): pass
    def network_of(self, node_id): return None
    def hold_reading(self, node_id, seconds): pass
    def keep_linked(self, node_ids): pass
    def linked_providers(self, service): return []
    def offer(self, service, handler): pass
    def withdraw(self, service): pass

    async def call(self, service, payload, timeout, peer=None):
        raise ConnectionError("no peers")


class Harness:
    """A single-validator chain (no network) serving the order API on a loopback test server."""

    def __init__(self, tmp_path) -> None:
        self.loop = asyncio.new_event_loop()
        identity = NodeIdentity.generate()
        self.accounts = AccountStore(tmp_path)
        for name in ACCOUNTS:
            self.accounts.new(name, exist_ok=True)
        self.node = types.SimpleNamespace(public_refusals=RefusalLog(), api_extensions=[], metric_sources=[],
                                          node_id=identity.node_id, accounts=self.accounts,
                                          configs=types.SimpleNamespace(api=ApiConfig(
                                              host="127.0.0.1", port=0, token=TOKEN, data_dir=tmp_path, debug_api=False)))
        self.chain = self.node.chain = ChainService(identity, NoNetwork(), ChainStore(tmp_path), network_id="test",
                                                    markets="BTC-USD,ETH-USD:0.01:0.001", found_after=0.0)
        self.node.chain_reads = self.node.chain_submits = ChainApi(self.chain)
        from node.api.cancel_all import install_cancel_all_api
        from node.api.history import install_history_api
        from node.api.orders import install_order_api

        self.node.api_extensions += [install_order_api, install_cancel_all_api, install_history_api]

        async def setup() -> TestClient:
            client = TestClient(TestServer(build_app(self.node)))
            await self.chain.start()
            assert await self.chain.wait_ready(5)
            await client.start_server()
            return client
        self.client = self.run(setup())

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def request(self, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, object]:
        async def go():
            data = raw if raw is not None else (None if body is None else orjson.dumps(body))
            async with self.client.request(method, path, data=data, headers={
                    "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}) as response:
                text = await response.read()
                return response.status, orjson.loads(text) if text else None
        return self.run(go())

    def close(self) -> None:
        self.run(self.client.close())
        self.run(self.chain.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("api"))
    yield harness
    harness.close()


GOOD = {"market": "BTC-USD", "side": "buy", "type": "limit", "price": "100.25", "qty": "1.5"}


@pytest.mark.parametrize("body, status, code, field", [
    ([1, 2], 400, "invalid_body", None),
    ("text", 400, "invalid_body", None),
    ({**GOOD, "color": "red"}, 422, "unknown_field", "color"),
    ({k: v for k, v in GOOD.items() if k != "market"}, 422, "missing_field", "market"),
    ({k: v for k, v in GOOD.items() if k != "qty"}, 422, "missing_field", "qty"),
    ({**GOOD, "market": "DOGE-USD"}, 422, "unknown_market", "market"),
    ({**GOOD, "market": 5}, 422, "invalid_market", "market"),
    ({**GOOD, "side": "up"}, 422, "invalid_side", "side"),
    ({**GOOD, "type": "stop"}, 422, "invalid_type", "type"),
    ({k: v for k, v in GOOD.items() if k != "price"}, 422, "price_required", "price"),
    ({**GOOD, "type": "market"}, 422, "price_not_allowed", "price"),
    ({**GOOD, "price": 100.25}, 422, "float_not_allowed", "price"),
    ({**GOOD, "qty": 1.5}, 422, "float_not_allowed", "qty"),
    ({**GOOD, "price": "100.255"}, 422, "price_not_multiple_of_tick", "price"),
    ({**GOOD, "qty": "0.00001"}, 422, "qty_not_multiple_of_lot", "qty"),
    ({**GOOD, "price": "-1"}, 422, "invalid_price", "price"),
    ({**GOOD, "price": "NaN"}, 422, "invalid_price", "price"),
    ({**GOOD, "price": "inf"}, 422, "invalid_price", "price"),
    ({**GOOD, "price": "1e5"}, 422, "invalid_price", "price"),
    ({**GOOD, "price": "0"}, 422, "zero", "price"),
    ({**GOOD, "price": "2000000000"}, 422, "price_above_band", "price"),
    ({**GOOD, "qty": "2000000"}, 422, "qty_above_max", "qty"),
    ({**GOOD, "price": True}, 422, "invalid_price", "price"),
    ({**GOOD, "account": 7}, 422, "invalid_account", "account"),
    ({**GOOD, "account": "x" * 65}, 422, "unknown_account", "account"),
    ({**GOOD, "account": "nobody"}, 422, "unknown_account", "account"),
    ({**GOOD, "stp": "never"}, 422, "invalid_stp", "stp"),
])
def test_each_invalid_body_gets_its_error_code(api, body, status, code, field):
    got, response = api.request("POST", "/orders?wait=0", body)
    assert got == status, response
    assert response["error"]["code"] == code
    assert response["error"].get("field") == field
    assert response["error"]["message"]


@pytest.mark.parametrize("raw, code", [(b"", "empty_body"), (b"{", "invalid_json"), (b"\xff\xfe", "invalid_json"),
                                       (b"{'a': 1}", "invalid_json")])
def test_unparseable_bodies_are_400(api, raw, code):
    status, response = api.request("POST", "/orders", raw=raw)
    assert status == 400 and response["error"]["code"] == code


@pytest.mark.parametrize("query, code", [("wait=-1", "invalid_wait"), ("wait=abc", "invalid_wait"),
                                         ("wait=nan", "invalid_wait"), ("wait=31", "invalid_wait")])
def test_bad_query_parameters_are_400(api, query, code):
    status, response = api.request("POST", f"/orders?{query}", GOOD)
    assert status == 400 and response["error"]["code"] == code and response["error"]["field"] == "wait"


def test_orders_book_trades_and_cancel(api):
    status, placed = api.request("POST", "/orders", {**GOOD, "account": "maker"})
    assert status == 201, placed
    order = placed["order"]
    assert order["status"] == "open" and order["price"] == "100.25" and order["qty"] == "1.5000"
    assert placed["final"] is True and placed["trades"] == [] and placed["height"] >= 1
    status, taken = api.request("POST", "/orders", {"market": "BTC-USD", "side": "sell", "type": "market",
                                                    "qty": "0.5", "account": "taker"})
    assert status == 201 and taken["order"]["status"] == "filled", taken
    trade = taken["trades"][0]
    assert trade["price"] == "100.25" and trade["qty"] == "0.5000"
    assert trade["maker_order_id"] == order["id"] and trade["buy_order_id"] == order["id"]
    assert set(trade) >= {"id", "market", "price", "qty", "maker_order_id", "taker_order_id", "buy_order_id",
                          "sell_order_id"}
    status, book = api.request("GET", "/book/BTC-USD?depth=5")
    assert status == 200 and book["bids"][0] == ["100.25", "1.0000"] and book["asks"] == []
    assert book["height"] >= 2 and len(book["digest"]) == 64 and book["final"] is True
    status, plain = api.request("GET", "/book/BTC-USD?depth=5&digest=0")     # the same levels, not the digest
    assert status == 200 and plain["digest"] is None and plain["bids"] == book["bids"]
    assert api.request("GET", "/book/BTC-USD?digest=2")[1]["error"]["code"] == "invalid_digest"
    budget = api.client.server.app[BOOK_DIGEST_BUDGET]
    budget.spent(60.0)                                          # the digest's share of the loop is spent ...
    status, cached = api.request("GET", "/book/BTC-USD?depth=5")    # ... but this height's digest is computed
    assert cached["digest"] == book["digest"] and "digest_deferred" not in cached
    assert api.request("POST", "/orders", {**GOOD, "price": "90", "qty": "0.1"})[0] == 201     # the book changes
    status, deferred = api.request("GET", "/book/BTC-USD?depth=5")
    assert status == 200 and deferred["digest"] is None and deferred["digest_deferred"] is True
    assert deferred["bids"][-1] == ["90.00", "0.1000"]
    budget.spent(0.0)
    status, fresh = api.request("GET", "/book/BTC-USD?depth=5")
    assert len(fresh["digest"]) == 64 and fresh["digest"] != book["digest"] and "digest_deferred" not in fresh
    status, trades = api.request("GET", "/trades/BTC-USD?limit=10")
    assert status == 200 and trades["trades"][-1]["id"] == trade["id"]
    status, got = api.request("GET", f"/orders/{order['id']}")
    assert status == 200 and got["order"]["status"] == "partially_filled" and got["order"]["remaining"] == "1.0000"
    # a cancel signed by another key is refused by the state machine, on every node: only the owner may
    intruder = SigningKey(bytes(32))
    forged = sign_tx(intruder.sign, intruder.public_key, api.chain.genesis.chain_id, "x1",
                     int(time.time() * 1000) + 60_000, [CancelOp.parse("BTC-USD", order["id"])])
    status, refused = api.request("DELETE", f"/orders/{order['id']}", {"signed": forged.as_json()})
    assert status == 403 and refused["error"]["code"] == "not_owner", refused
    status, still = api.request("GET", f"/orders/{order['id']}")
    assert still["order"]["status"] == "partially_filled"
    status, cancelled = api.request("DELETE", f"/orders/{order['id']}")
    assert status == 200 and cancelled["cancel"]["status"] == "done"
    assert cancelled["order"]["status"] == "cancelled"
    status, again = api.request("DELETE", f"/orders/{order['id']}")
    assert status == 409 and again["error"]["code"] == "order_closed"
    assert api.request("GET", "/orders/nope")[0] == 404
    assert api.request("GET", "/book/NOPE-USD")[1]["error"]["code"] == "unknown_market"
    assert api.request("GET", "/book/BTC-USD?depth=x")[1]["error"]["code"] == "invalid_depth"
    assert api.request("GET", "/trades/BTC-USD?limit=-1")[1]["error"]["code"] == "invalid_limit"
    status, rejected = api.request("POST", "/orders", {**GOOD, "type": "fok", "qty": "100"})
    assert status == 201 and rejected["order"]["status"] == "rejected"
    assert rejected["order"]["reason"] == "fok_not_fillable"
    status, mine = api.request("GET", "/orders?account=maker")
    assert status == 200 and [o["id"] for o in mine["orders"]] == [order["id"]]


def test_an_externally_signed_order_trades_for_its_own_account(api):
    """A client with its own key (no account on this node) signs the documented bytes itself."""
    key = SigningKey(bytes(range(1, 33)))
    tx = sign_tx(key.sign, key.public_key, api.chain.genesis.chain_id, "ext-1", int(time.time() * 1000) + 60_000,
                 [NewOrderOp.parse("ETH-USD", "sell", "limit", "20.00", "1", None)])
    status, body = api.request("POST", "/orders", {"signed": tx.as_json()})
    assert status == 201 and body["order"]["id"] == tx.order_id(0) and body["order"]["account"] == key.public_key.hex()
    tampered = tx.as_json() | {"nonce": "ext-2"}
    status, body = api.request("POST", "/orders", {"signed": tampered})
    assert status == 401 and body["error"]["code"] == "bad_signature"
    status, body = api.request("POST", "/orders", {"signed": tx.as_json()})     # the same transaction again
    assert status == 422 and body["error"]["code"] == "duplicate"
    status, position = api.request("GET", f"/accounts/{key.public_key.hex()}")
    assert status == 200 and set(position["positions"]) >= {"ETH", "USD"}


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
                      st.sampled_from(["BTC-USD", "ETH-USD", "buy", "sell", "limit", "market", "ioc", "fok",
                                       "post_only", "100.25", "0.5", "1", "1e3", "-0", "0.0001", "cancel_oldest"]))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
order_like = st.dictionaries(st.sampled_from(sorted({"market", "side", "type", "price", "qty", "account", "stp",
                                                     "extra"})), json_value, max_size=8)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(order_like, json_value))
def test_no_json_body_crashes_the_node(api, body):
    try:
        raw = orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):      # e.g. integers beyond 64 bits: send them as text
        raw = repr(body).encode()
    status, response = api.request("POST", "/orders?wait=0", raw=raw)
    assert status in (201, 202, 400, 422), (status, response)
    if status >= 400:
        assert set(response["error"]) >= {"code", "message"}
    else:
        assert response["order"]["id"]
    assert api.request("GET", "/book/BTC-USD?depth=1")[0] == 200


def test_batch_places_valid_orders_and_reports_each_invalid_one(api):
    orders = [{**GOOD, "price": "99.00", "account": "batch"}, {**GOOD, "price": 1.5},
              {**GOOD, "side": "sell", "price": "99.00", "account": "other"}]
    status, body = api.request("POST", "/orders/batch?wait=2", {"orders": orders})
    assert status == 200
    first, bad, third = body["results"]
    assert bad == {"error": {"code": "float_not_allowed", "message": bad["error"]["message"], "field": "price"}}
    assert first["order"]["status"] in ("open", "partially_filled", "filled") and first["final"] and third["final"]
    assert third["order"]["status"] == "filled" and first["order"]["status"] == "filled"
    assert third["trades"] and third["trades"][0]["id"] == first["trades"][0]["id"]
    assert api.request("POST", "/orders/batch", {"orders": []})[1]["error"]["code"] == "invalid_batch_size"
    assert api.request("POST", "/orders/batch", [GOOD])[1]["error"]["code"] == "invalid_body"


