"""ReplicationService: the network adapter that runs a Replica inside a node.

It maps the I/O-free core onto the node: replication messages come from the MessageRouter
(`subscribe`) and go out through `broadcast` / `send_to_peer`; new links trigger an anti-entropy
pull; a timer drives beacons, pulls and membership; records go to the event log through group
commit, and an order is acknowledged only after its record is fsync'd (its event leaves the node
only then, too). It also answers the RPC services `orders.sync` and `book.snapshot`.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable

from exchange.display import order_view, trade_view
from exchange.events import Trade
from exchange.markets import MarketRegistry, parse_markets
from exchange.replication.eventlog import EventLog, GroupCommit
from exchange.replication.records import ReplEvent
from exchange.replication.replica import Replica, ReplicaConfig

log = logging.getLogger("exchange.service")

MESSAGE_TYPES = ("order", "cancel", "beacon", "sync_request", "sync_response")


def register_message_schemas() -> None:
    """Tell the wire layer about our message types (fields are checked in depth by the Replica)."""
    from p2p import messages as m

    def is_map(value: Any) -> bool:
        return isinstance(value, dict) and len(value) <= 100_000

    events = m.is_list(100_000)
    m.register_schema("order", {"events": events})
    m.register_schema("cancel", {"events": events})
    m.register_schema("beacon", {"cp": m.is_list(6)}, {"w": m.is_int(), "n": m.is_int()})
    m.register_schema("sync_request", {"vec": is_map}, {"n": m.is_int(), "w": m.is_int()})
    m.register_schema("sync_response", {}, {"events": events, "cps": m.is_list(100_000), "n": m.is_int(),
                                            "w": m.is_int()})


class Overloaded(Exception):
    """The replica's backlog of events not yet final is too long to accept more orders now."""


MAX_BACKLOG = 5_000    # verified events waiting above the watermark before new orders are refused (503)


class ReplicationService:
    def __init__(self, node_id: str, identity: Any, settings: Any, *, router: Any = None, peers: Any = None,
                 verify: Callable[[bytes, bytes, bytes], bool], node_id_for: Callable[[bytes], str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self.settings = settings
        self.router = router
        self.peers = peers
        self.clock = clock
        self.markets: MarketRegistry = parse_markets(settings.markets)
        beacon = settings.beacon_interval
        self.config = ReplicaConfig(
            beacon_interval=beacon, eager_beacon_gap=min(0.02, beacon), member_timeout=settings.member_timeout,
            snapshot_every=5000, keep_snapshots=4,   # book snapshots cost O(book); rollbacks are rare
            sync_interval=max(1.0, 10 * beacon), startup_grace=getattr(settings, "startup_grace", max(1.0, 5 * beacon)),
            max_message_bytes=int(settings.max_frame_bytes * 0.85))
        self.replica = Replica(node_id, self.markets, public_key=identity.public_key_bytes, sign=identity.sign,
                               verify=verify, node_id_for=node_id_for, config=self.config,
                               rng=random.Random(), now=clock())
        self.eventlog = EventLog(Path(settings.data_dir) / "events.log")
        self.commit = GroupCommit(self.eventlog)
        self._final_waiters: dict[str, list[asyncio.Future]] = {}
        self.final_at: dict[str, float] = {}     # event id -> when it first became final here (latency metrics)
        self.replica.ledger.listeners.append(self._on_final)
        self._tick_task: asyncio.Task | None = None
        self._pump_handle: asyncio.Handle | None = None
        self.loaded_records = 0
        self.started = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        records = await asyncio.to_thread(self.eventlog.open)
        self.loaded_records = self.replica.load(records)
        self.replica.take_records()
        self.replica.started_at = self.clock()
        if self.loaded_records:
            log.info("rebuilt from %s: %d records, %d final events, watermark %d", self.eventlog.path,
                     self.loaded_records, self.replica.final_count, self.replica.watermark)
        self.commit.start()
        if self.router is not None:
            register_message_schemas()
            for kind in MESSAGE_TYPES:
                self.router.subscribe(kind, self._on_message)
            if hasattr(self.router, "set_validator"):
                for kind in ("order", "cancel"):
                    self.router.set_validator(kind, self._precheck)
            self.peers.open_listeners.append(self._on_link_open)
            self.peers.close_listeners.append(self._on_link_close)
            if hasattr(self.peers, "heartbeat_extras"):   # link heartbeats carry our watermark too
                self.peers.heartbeat_extras.append(lambda: {"watermark": self.replica.watermark})
            for node_id in list(self.peers.links):
                self.replica.peer_up(node_id, self.clock())
        self._tick_task = asyncio.create_task(self._tick_loop(), name="replication.tick")
        self.started = True

    async def stop(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
        self.commit.add(self.replica.take_records())
        await self.commit.stop()

    # ------------------------------------------------------------------ network
    def _on_message(self, message: dict, from_node: str | None) -> None:
        self.replica.receive(message, from_node, self.clock())
        self._schedule_pump()

    def _precheck(self, message: dict, from_node: str | None) -> bool:
        ok = self.replica.precheck(message, from_node)
        if not ok:
            self._schedule_pump()
        return ok

    def _on_link_open(self, link: Any) -> None:
        if link.remote_id:
            self.replica.peer_up(link.remote_id, self.clock())
            self._schedule_pump()

    def _on_link_close(self, link: Any) -> None:
        if link.remote_id:
            self.replica.peer_down(link.remote_id)

    def _schedule_pump(self) -> None:
        """Drain the replica once per event-loop pass, however many messages arrived in it."""
        if self._pump_handle is None:
            self._pump_handle = asyncio.get_running_loop().call_soon(self.pump)

    def pump(self) -> None:
        self._pump_handle = None
        replica = self.replica
        records = replica.take_records()
        if records:
            self.commit.add(records)
        for kind, target, payload in replica.take_outbox():
            try:
                if kind == "broadcast":
                    if self.router is not None:
                        self.router.broadcast(payload)
                elif kind == "send":
                    if self.router is not None:
                        self.router.send_to_peer(target, payload)
                elif kind == "penalize" and self.peers is not None:
                    points, reason = payload
                    log.warning("penalising peer %s: %s", str(target)[:12], reason)
                    self.peers.penalize(target, points, reason)
            except ValueError as exc:   # e.g. a message above MAX_FRAME_BYTES
                log.warning("could not send %s: %s", payload.get("type"), exc)

    async def _tick_loop(self) -> None:
        interval = self.config.eager_beacon_gap / 2
        while True:
            await asyncio.sleep(interval)
            try:
                self.replica.tick(self.clock())
                self.pump()
            except Exception:   # never let one bad tick stop replication
                log.exception("replication tick failed")

    # ------------------------------------------------------------------ commands (the API)
    async def wait_ready(self, timeout: float = 5.0) -> bool:
        deadline = self.clock() + timeout
        while not self.replica.ready(self.clock()):
            if self.clock() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def submit(self, create: Callable[[float], ReplEvent]) -> tuple[ReplEvent, asyncio.Future]:
        """Create an own event, make it durable (fsync), then let it out. Returns the event and a future
        that resolves to the engine's events for it once it is final."""
        return (await self.submit_many([create]))[0]

    async def submit_many(self, creators: list[Callable[[float], ReplEvent]]) -> list[tuple[ReplEvent, asyncio.Future]]:
        """Several own events behind one fsync (a batch request, or concurrent requests in one loop pass)."""
        await self.wait_ready()
        backlog = len(self.replica.pending)
        if backlog > MAX_BACKLOG:
            raise Overloaded(f"{backlog} events are waiting to become final; retry shortly")
        loop = asyncio.get_running_loop()
        made = []
        for create in creators:
            event = create(self.clock())
            future = loop.create_future()
            self._final_waiters.setdefault(event.id, []).append(future)
            made.append((event, future))
        seq = self.replica.own.verified
        self.commit.add(self.replica.take_records())
        await self.commit.commit()
        self.replica.mark_durable(seq)
        self.replica.tick(self.clock())
        self.pump()
        return made

    async def wait_final(self, event: ReplEvent, future: asyncio.Future, timeout: float) -> list | None:
        """The engine's events for `event` once final, or None if it is not final within `timeout`."""
        if not future.done():
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.TimeoutError:
                waiters = self._final_waiters.get(event.id, [])
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    self._final_waiters.pop(event.id, None)
                return None
        return future.result()

    def _on_final(self, event: ReplEvent, results: list) -> None:
        final_at = self.final_at
        if event.id not in final_at:
            final_at[event.id] = time.time()      # wall clock: comparable across processes on one host
            if len(final_at) > 100_000:
                del final_at[next(iter(final_at))]
        waiters = self._final_waiters.pop(event.id, None)
        if waiters:
            for future in waiters:
                if not future.done():
                    future.set_result(results)

    async def place(self, market: str, side: str, kind: str, price: int | None, qty: int, account: str,
                    stp: str | None) -> tuple[ReplEvent, asyncio.Future]:
        return await self.submit(lambda now: self.replica.submit_order(market, side, kind, price, qty, account,
                                                                       stp, now))

    async def place_many(self, orders: list[dict[str, Any]]) -> list[tuple[ReplEvent, asyncio.Future]]:
        replica = self.replica

        def creator(o: dict[str, Any]) -> Callable[[float], ReplEvent]:
            return lambda now: replica.submit_order(o["market"], o["side"], o["kind"], o["price"], o["qty"],
                                                    o["account"], o["stp"], now)
        return await self.submit_many([creator(o) for o in orders])

    async def cancel(self, order_id: str, account: str | None) -> tuple[ReplEvent, asyncio.Future]:
        return await self.submit(lambda now: self.replica.submit_cancel(order_id, account, now))

    # ------------------------------------------------------------------ views
    def order_json(self, order_id: str) -> dict[str, Any] | None:
        state = self.replica.order_state(order_id)
        if state is None:
            return None
        event, status, remaining, reason = state
        _, market_name, side, kind, price, qty, account, stp = event.body
        market = self.markets.get(market_name) if market_name in self.markets else None
        fmt_price = (lambda v: str(v)) if market is None else market.format_price
        fmt_qty = (lambda v: str(v)) if market is None else market.format_qty
        return {"id": event.id, "status": status, "market": market_name, "side": side, "type": kind,
                "price": None if price is None else fmt_price(price), "qty": fmt_qty(qty),
                "remaining": fmt_qty(remaining), "filled": fmt_qty(max(qty - remaining, 0)) if status != "rejected"
                else fmt_qty(0), "account": account, "stp": stp, "reason": reason, "origin": event.origin,
                "key": [event.lamport, event.origin, event.seq], "final": self.replica.is_final(event),
                "final_at": self.final_at.get(event.id)}

    def trades_json(self, results: list, market_name: str) -> list[dict[str, Any]]:
        market = self.markets.get(market_name)
        return [trade_view(item, market) for item in results if type(item) is Trade]

    def trade_rows_json(self, market_name: str, limit: int | None) -> list[dict[str, Any]]:
        market = self.markets.get(market_name)
        rows = self.replica.ledger.trades.get(market_name, [])
        if limit is not None:
            rows = rows[-limit:] if limit > 0 else []
        return [{"id": r[0], "market": r[1], "price": market.format_price(r[2]), "qty": market.format_qty(r[3]),
                 "maker_order_id": r[4], "taker_order_id": r[5], "buy_order_id": r[6], "sell_order_id": r[7],
                 "taker_side": r[8]} for r in rows]

    def book_json(self, market_name: str, depth: int | None, provisional: bool = False) -> dict[str, Any]:
        from exchange.display import depth_view

        replica = self.replica
        engine = replica.provisional_engine(market_name) if provisional else replica.engine(market_name)
        view = depth_view(engine, depth, with_digest=provisional)
        if not provisional:     # the final book's digest is cached per final prefix; no re-hash per request
            view["digest"] = replica.ledger.market_digest(market_name)
        view.update(watermark=replica.watermark, final_events=replica.final_count, provisional=provisional,
                    state_digest=replica.digest(), trade_log_hash=replica.trade_log_hash,
                    pending_events=len(replica.pending))
        return view

    def status(self) -> dict[str, Any]:
        now = self.clock()
        stats = self.replica.stats(now)
        stats["members"] = len(stats["members"])
        stats.update(digest=self.replica.digest(), log_bytes=self.eventlog.size, log_syncs=self.eventlog.syncs,
                     loaded_records=self.loaded_records)
        stats["summary"] = (f"watermark {stats['watermark']}, {stats['final_events']} final events "
                            f"({stats['pending_events']} pending), {stats['members']} members, "
                            f"{stats['trades']} trades, digest {stats['digest'][:12]}")
        return stats

    # ------------------------------------------------------------------ RPC services (p2p/rpc builtins)
    def rpc_orders_sync(self, payload: Any, peer: str) -> Any:
        """`orders.sync`: the same answer as a sync_request message, returned directly."""
        replica = self.replica
        request = dict(payload) if isinstance(payload, dict) else {}
        request["type"] = "sync_request"
        before = len(replica.outbox)
        replica.receive(request, peer, self.clock())
        answers = [p for k, t, p in replica.outbox[before:] if k == "send" and t == peer
                   and p.get("type") == "sync_response"]
        replica.outbox[before:] = [o for o in replica.outbox[before:] if o[2] not in answers]
        self._schedule_pump()
        return answers[0] if answers else {"type": "sync_response", "events": [], "cps": []}

    def rpc_book_snapshot(self, payload: Any, peer: str) -> Any:
        """`book.snapshot`: the final state at W (engine snapshots, hashes, per-origin base)."""
        return self.replica._export_snapshot()
