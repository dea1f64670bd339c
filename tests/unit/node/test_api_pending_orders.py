"""Pending orders are first-class: two pinned validators in one process (node A serves the order API),
linked by an in-process network the test can cut. While A hears no quorum, an order is answered 202
`no_quorum` and `GET /orders/{id}`, `GET /orders` and `GET /accounts/{id}` show it as `pending` with its
reason; a cancel of it is held until a block has the order. After the heal the order that rests is
cancelled by that cancel, and the cancel of an order that never rested resolves `not_needed`."""
from __future__ import annotations

import asyncio
import time
import types

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from exchange.chain.types.codec import pack, unpack
from exchange.chain.types.genesis import Genesis
from exchange.chain.api_door import ChainApi
from exchange.chain.service import ChainService
from exchange.app import ExchangeParams
from exchange.chain.store.block_store import ChainStore
from node.accounts import AccountStore
from node.api.server import build_app
from node.api.orders import install_order_api
from node.configs import ApiConfig
from node.identity import NodeIdentity
from p2p.public.refusals import RefusalLog

TOKEN = "test-token-0123456789"
MARKETS = "BTC-USD"


class Clock:
    """Wall time plus an offset both nodes share: a jump makes a cut-off peer look silent at once."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class LocalNet:
    """One node's side of an in-process network: messages go through msgpack, as on a link."""

    def __init__(self, me: str, world: "World") -> None:
        self.me, self.world = me, world
        self.offers: dict = {}

    def _peer(self, node_id: str):
        return self.world.services.get(node_id) if self.world.linked else None

    def send(self, node_id, message):
        peer = self._peer(node_id)
        if peer is not None:
            data = pack(message)
            asyncio.get_running_loop().call_soon(lambda: peer.on_message(unpack(data), self.me))

    def broadcast(self, message):
        for node_id in self.world.services:
            if node_id != self.me:
                self.send(node_id, message)

    def penalize(self, node_id, points, reason): pass
    def hold_reading(self, node_id, seconds): pass
    def network_of(self, node_id): return None
    def keep_linked(self, node_ids): pass
    def linked_providers(self, service): return []

    def offer(self, service, handler):
        self.offers[service] = handler

    def withdraw(self, service):
        self.offers.pop(service, None)

    async def call(self, service, payload, timeout, peer=None):
        raise ConnectionError("no RPC here: both nodes are validators")


class World:
    def __init__(self) -> None:
        self.services: dict[str, ChainService] = {}
        self.linked = True


class TwoValidators:
    def __init__(self, tmp_path) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.world = World()
        ids = [NodeIdentity.generate(), NodeIdentity.generate()]
        params = ExchangeParams(markets=MARKETS)
        genesis = Genesis(network_id="test", created_ms=int(time.time() * 1000), founder=ids[0].public_key_bytes,
                          validators=tuple(i.public_key_bytes for i in ids), pinned=True, exchange=params.to_wire())
        for n, identity in enumerate(ids):
            store = ChainStore(tmp_path / f"node{n}")
            store.save_genesis(genesis)
            service = ChainService(identity, LocalNet(identity.node_id, self.world), store, network_id="test",
                                   markets=MARKETS, clock=self.clock)
            self.world.services[identity.node_id] = service
        self.a, self.b = self.world.services.values()
        self.accounts = AccountStore(tmp_path / "node0")
        for name in ("default", "maker"):
            self.accounts.new(name, exist_ok=True)
        self.node = types.SimpleNamespace(public_refusals=RefusalLog(), api_extensions=[install_order_api],
                                          metric_sources=[], node_id=ids[0].node_id,
                                          accounts=self.accounts, chain_reads=ChainApi(self.a),
                                          chain_submits=ChainApi(self.a),
                                          configs=types.SimpleNamespace(api=ApiConfig(
                                              host="127.0.0.1", port=0, token=TOKEN, data_dir=tmp_path,
                                              debug_api=False)))

        async def setup() -> TestClient:
            client = TestClient(TestServer(build_app(self.node)))
            for service in (self.a, self.b):
                await service.start()
            await client.start_server()
            return client
        self.client = self.run(setup())

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def request(self, method: str, path: str, body=None) -> tuple[int, dict]:
        data = None if body is None else orjson.dumps(body)
        async with self.client.request(method, path, data=data, headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}) as response:
            return response.status, orjson.loads(await response.read())

    def call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        return self.run(self.request(method, path, body))

    def until(self, predicate, timeout: float = 10.0) -> None:
        async def poll():
            deadline = time.monotonic() + timeout
            while not predicate():
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.02)
        self.run(poll())

    def close(self) -> None:
        self.run(self.client.close())
        for service in (self.a, self.b):
            self.run(service.stop())
        self.loop.close()


@pytest.fixture
def pair(tmp_path):
    harness = TwoValidators(tmp_path)
    yield harness
    harness.close()


def order(price: str, side: str = "buy", account: str = "default") -> dict:
    return {"market": "BTC-USD", "side": side, "type": "post_only", "price": price, "qty": "0.5", "account": account}


def test_pending_orders_are_visible_cancellable_and_resolve_after_the_heal(pair):
    pair.until(lambda: pair.a.core is not None and pair.a.core.height >= 1 and pair.a.core.quorum_present(pair.clock()))
    status, body = pair.call("POST", "/orders?wait=5", order("100.00", "sell", "maker"))
    assert status == 201 and body["final"] is True

    pair.world.linked = False                   # B is cut off; a jump past CoreConfig.live_after makes it silent
    pair.clock.offset += 5.0
    assert pair.a.submissions.pending_reason() == "no_quorum"
    status, resting = pair.call("POST", "/orders?wait=0.3", order("50.00"))
    assert (status, resting["final"], resting["reason"], resting["order"]["status"]) == (202, False, "no_quorum",
                                                                                          "pending")
    status, crossing = pair.call("POST", "/orders?wait=0.3", order("100.00"))     # post_only: rejected on landing
    assert status == 202
    resting_id, crossing_id = resting["order"]["id"], crossing["order"]["id"]

    status, got = pair.call("GET", f"/orders/{resting_id}")
    assert status == 200 and got["final"] is False and got["reason"] == "no_quorum"
    assert {k: got["order"][k] for k in ("id", "status", "reason", "price", "qty", "filled")} == {
        "id": resting_id, "status": "pending", "reason": "no_quorum", "price": "50.00", "qty": "0.5000",
        "filled": "0.0000"}                                 # padded as the market writes a final order's
    assert resting["order"]["qty"] == resting["order"]["remaining"] == "0.5000"
    listed = [o["id"] for o in pair.call("GET", "/orders")[1]["orders"]]
    assert listed[:2] == [crossing_id, resting_id]          # newest first, before the final ones
    assert [o["id"] for o in pair.call("GET", "/orders?status=pending")[1]["orders"]] == [crossing_id, resting_id]
    assert resting_id not in [o["id"] for o in pair.call("GET", "/orders?status=open")[1]["orders"]]
    default = pair.accounts.get("default").id
    assert [o["id"] for o in pair.call("GET", f"/accounts/{default}")[1]["pending_orders"]] == [crossing_id, resting_id]
    assert pair.call("GET", f"/accounts/{pair.accounts.get('maker').id}")[1]["pending_orders"] == []

    status, cancel = pair.call("DELETE", f"/orders/{resting_id}?wait=0.2")
    assert status == 202 and cancel["cancel"]["status"] == "pending" and cancel["cancel"]["reason"] == "no_quorum"
    assert pair.call("GET", f"/orders/{resting_id}")[1]["order"]["cancel"]["tx_id"] == cancel["cancel"]["tx_id"]
    assert pair.call("DELETE", f"/orders/{resting_id}")[0] == 409            # one cancel waits already
    assert pair.a.core is not None and pair.a.core.height == pair.b.core.height   # nothing became final meanwhile

    async def heal_and_cancel_the_crossing_one():
        waiting = asyncio.ensure_future(pair.request("DELETE", f"/orders/{crossing_id}?wait=20"))
        await asyncio.sleep(0.2)
        pair.world.linked = True
        return await waiting
    status, withdrawn = pair.run(heal_and_cancel_the_crossing_one())
    assert (status, withdrawn["final"], withdrawn["cancel"]["status"], withdrawn["cancel"]["reason"]) == (
        200, True, "not_needed", "order_rejected"), withdrawn

    pair.until(lambda: (pair.a.state.order(resting_id) or {}).get("status") == "cancelled")
    final = pair.a.state.order(resting_id)
    assert final is not None and final["height"] < pair.a.core.height     # the order rested, a later block cancelled it
    assert pair.call("GET", "/orders?status=pending")[1]["orders"] == []
    pair.until(lambda: pair.b.core is not None and pair.b.state.order(resting_id) == pair.a.state.order(resting_id))
