"""The market data stream (`/ws`) as a program wants it: one async iterator of events that survives the node.

The node numbers each subscription's messages from its snapshot (`seq` 0) and keeps no history to replay
from, so after a dropped connection the way back is a fresh snapshot. This client reconnects with
exponential backoff (jittered), subscribes again to everything it had, and says what happened:
- a book comes back as a `resnapshot` event: the book as it stands, replacing the copy;
- trades are delivered once each, in order: a reconnect's snapshot (the last 100) is filtered against
  what was already delivered, and if the gap may hold more than the snapshot, the rest is fetched from
  `GET /trades` first, so nothing is missed and nothing repeats;
- a sequence gap or a book checksum that does not match the copy re-subscribes that channel alone
  (`resnapshot` again) instead of handing out a wrong book.
"""
from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import AsyncIterator

import aiohttp

from exchange_node_client.json_types import JsonObject

MAX_REMEMBERED_TRADES = 20_000


@dataclass
class StreamEvent:
    """`kind`: snapshot (first data of a subscription), update, resnapshot (after a reconnect or a gap: the
    book replaced), trades (new trades, each once), reconnected / disconnected (the connection itself)."""

    kind: str
    channel: str | None = None
    market: str | None = None
    bids: list[list[str]] = field(default_factory=list)
    asks: list[list[str]] = field(default_factory=list)
    trades: list[JsonObject] = field(default_factory=list)
    detail: str | None = None


class LocalBook:
    """A copy of one book subscription, checked against the node's checksum after every message."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.sides: dict[str, dict[str, str]] = {"bids": {}, "asks": {}}

    def apply(self, message: JsonObject) -> bool:
        """Fold a snapshot or update in; False when the result does not match the node's checksum."""
        if message["type"] == "snapshot":
            self.sides = {"bids": {}, "asks": {}}
        for side in ("bids", "asks"):
            for price, qty in message.get(side, []):
                if Decimal(qty) == 0:
                    self.sides[side].pop(price, None)
                else:
                    self.sides[side][price] = qty
        return self.checksum() == message.get("checksum")

    def levels(self, side: str) -> list[list[str]]:
        ordered = sorted(self.sides[side].items(), key=lambda kv: Decimal(kv[0]), reverse=side == "bids")
        return [[price, qty] for price, qty in ordered]

    def checksum(self) -> int:
        bids, asks = self.levels("bids")[:25], self.levels("asks")[:25]
        parts: list[str] = []
        for i in range(max(len(bids), len(asks))):
            if i < len(bids):
                parts += bids[i]
            if i < len(asks):
                parts += [asks[i][0], "-" + asks[i][1]]
        return zlib.crc32(":".join(parts).encode())


class _Subscription:
    def __init__(self, channel: str, market: str, depth: int | None) -> None:
        self.channel, self.market, self.depth = channel, market, depth
        self.seq = -1
        self.book = LocalBook(depth or 25) if channel == "book" else None
        self.had_data = False
        self.seen: OrderedDict[str, None] = OrderedDict()

    def request(self, req: int) -> JsonObject:
        message: JsonObject = {"event": "subscribe", "channel": self.channel, "market": self.market, "req": req}
        if self.depth is not None:
            message["depth"] = self.depth
        return message

    def remember(self, trade_id: str) -> None:
        self.seen[trade_id] = None
        if len(self.seen) > MAX_REMEMBERED_TRADES:
            self.seen.popitem(last=False)


class MarketStream:
    """Subscribe to books and trades, then `async for event in stream.events()`."""

    def __init__(self, api_url: str, backoff: tuple[float, float] = (0.05, 5.0), heartbeat: float = 15.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.backoff = backoff
        self.heartbeat = heartbeat
        self._subs: list[_Subscription] = []
        self._by_chan: dict[int, _Subscription] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closed = False
        self.reconnects = 0
        self.backfills = 0                            # reconnects whose trade gap was filled from GET /trades
        self.last_resume_s: float | None = None      # from a dropped connection to the first data after it

    def subscribe_book(self, market: str, depth: int = 25) -> None:
        self._subs.append(_Subscription("book", market, depth))

    def subscribe_trades(self, market: str) -> None:
        self._subs.append(_Subscription("trades", market, None))

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()

    async def events(self) -> AsyncIterator[StreamEvent]:
        delay = self.backoff[0]
        dropped_at: float | None = None
        async with aiohttp.ClientSession() as session:
            while not self._closed:
                try:
                    async with session.ws_connect(self.api_url.replace("http", "ws", 1) + "/ws",
                                                  heartbeat=self.heartbeat) as ws:
                        self._ws = ws
                        await self._subscribe_all(ws)
                        if dropped_at is not None:
                            yield StreamEvent("reconnected", detail=f"after {time.monotonic() - dropped_at:.3f} s")
                        delay = self.backoff[0]
                        async for event in self._read(ws, session):
                            if dropped_at is not None and event.kind in ("resnapshot", "trades", "snapshot"):
                                self.last_resume_s, dropped_at = time.monotonic() - dropped_at, None
                            yield event
                except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                else:
                    reason = f"closed by the node ({ws.close_code})"
                self._ws = None
                if self._closed:
                    # `close()` sets it during the awaits above: mypy keeps the narrowing
                    return  # type: ignore[unreachable]
                if dropped_at is None:
                    dropped_at = time.monotonic()
                    self.reconnects += 1
                    yield StreamEvent("disconnected", detail=reason)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(self.backoff[1], delay * 2)

    async def _subscribe_all(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._by_chan = {}
        for index, sub in enumerate(self._subs):
            sub.seq = -1
            await ws.send_json(sub.request(index))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse,
                    session: aiohttp.ClientSession) -> AsyncIterator[StreamEvent]:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            if "event" in data:
                if data["event"] == "subscribed" and isinstance(data.get("req"), int):
                    self._by_chan[data["chan"]] = self._subs[data["req"]]
                elif data["event"] == "error":
                    raise ConnectionError(f"the node refused a request: {data.get('code')} {data.get('msg')}")
                continue
            sub = self._by_chan.get(data.get("chan"))
            if sub is None:
                continue
            if data["seq"] != sub.seq + 1 and data["type"] != "snapshot":
                await self._resubscribe(ws, sub, data["chan"])
                continue
            sub.seq = data["seq"]
            if sub.book is not None:
                event = self._book_event(sub, data)
                if event is None:
                    await self._resubscribe(ws, sub, data["chan"])
                    continue
                yield event
            else:
                fresh = await self._new_trades(sub, data, session)
                sub.had_data = True
                if fresh:
                    yield StreamEvent("trades", "trades", sub.market, trades=fresh)

    def _book_event(self, sub: _Subscription, data: JsonObject) -> StreamEvent | None:
        assert sub.book is not None
        if not sub.book.apply(data):
            return None
        kind = data["type"] if not (data["type"] == "snapshot" and sub.had_data) else "resnapshot"
        sub.had_data = True
        return StreamEvent(kind, "book", sub.market, sub.book.levels("bids"), sub.book.levels("asks"))

    async def _resubscribe(self, ws: aiohttp.ClientWebSocketResponse, sub: _Subscription, chan: int) -> None:
        self._by_chan.pop(chan, None)
        sub.seq = -1
        await ws.send_json({"event": "unsubscribe", "chan": chan})
        await ws.send_json(sub.request(self._subs.index(sub)))

    async def _new_trades(self, sub: _Subscription, data: JsonObject,
                          session: aiohttp.ClientSession) -> list[JsonObject]:
        trades = data.get("trades", [])
        if data["type"] == "snapshot" and sub.seen and trades and trades[0]["id"] not in sub.seen:
            # the snapshot starts after something we have: the gap may hold more than it does
            async with session.get(f"{self.api_url}/trades/{sub.market}?limit=10000") as response:
                trades = (await response.json())["trades"]
            self.backfills += 1
        fresh = [trade for trade in trades if trade["id"] not in sub.seen]
        for trade in fresh:
            sub.remember(trade["id"])
        return fresh
