"""The `/ws` endpoint: accepts clients, reads their requests, and routes them to the channels.

Requests are JSON objects with an `event` (subscribe, unsubscribe, auth, ping); every reply is an
event too, and data arrives as `{"chan", "seq", "type": "snapshot"|"update", ...}`. docs/api.md,
"Market data stream", documents every message. A client's bad input gets an `error` event,
never an exception; a client that floods requests or stops reading is disconnected with a close
code that says why. Clients, subscriptions and unread bytes each have a share per address, a share per
network (/24 or /48) and a cap in all (p2p/public/sources.py `Shares`); what is refused over them is recorded by
source (p2p/public/refusals.py) for /status and the console. When every client slot is taken, a newcomer
from a network holding fewer than the most crowded one is let in: that network's client with the fewest
subscriptions is closed to make room (as the API's connection guard does), so a few networks cannot hold the
stream against everyone else. When every network holds one, a newcomer from a network holding none takes the
place of the client idle the longest (Bitcoin Core's rule: the one whose last request is the oldest; a token
holder is never evicted), so a thousand networks of one client each cannot
hold it either. A request without the token draws on the public rate limit of the client's
address (node/api/rate.py), charged the event loop's CPU it took: a candles snapshot over the whole kept
trade log costs what it is worth, whatever the number of connections it comes over.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import orjson
from aiohttp import WSMsgType, web

from node.api.base import ApiError, Json, JsonObject
from node.api.rate import PublicBudget, cost_units
from node.marketdata.feed import DEFAULT_DEPTH, MarketFeed, SubscribeError
from node.marketdata.session import CLOSE_GOING_AWAY, CLOSE_TOO_MANY_MESSAGES, StreamSession, Subscription
from p2p.public.refusals import RefusalLog
from p2p.public.sources import Shares, cap_name, scope_words, subnet_of
from node.tasks import cancel_and_wait
from p2p.resilience.token_bucket import TokenBucket

log = logging.getLogger("node.stream")

CHANNELS = ("book", "trades", "ticker", "candles", "orders", "status")
MARKET_CHANNELS = ("book", "trades", "ticker", "candles")
MAX_REQUEST_BYTES = 4096
MAX_SUBSCRIPTIONS = 32          # per connection
REQUEST_RATE = 20.0             # requests per second a client may send, on average ...
REQUEST_BURST = 50              # ... and at once
HEARTBEAT = 30.0                # seconds between WebSocket pings; a client that misses the pong is closed
STATUS_INTERVAL = 1.0

TokenCheck = Callable[[str], bool]


def _is_auth(text: str) -> bool:
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(request, dict) and request.get("event") == "auth"


class StatusChannel:
    """Pushes `source()` (node, peers, router, finality summaries) to its subscribers every second."""

    def __init__(self, source: Callable[[], JsonObject], interval: float = STATUS_INTERVAL) -> None:
        self.source = source
        self.interval = interval
        self.subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, session: StreamSession) -> Subscription:
        sub = Subscription(session, session.new_chan(), "status", None, {"channel": "status"})
        self.subs.append(sub)
        return sub

    def snapshot(self, sub: Subscription) -> None:
        sub.send(orjson.dumps({"type": "snapshot", "status": self.source()}, default=str))

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subs:
            self.subs.remove(sub)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stream.status")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.subs:
                continue
            try:
                body = orjson.dumps({"type": "update", "status": self.source()}, default=str)
            except Exception:      # a broken summary must not end the channel
                log.exception("status summary failed")
                continue
            for sub in list(self.subs):
                sub.send(body)


class StreamServer:
    """`subscriptions` and `unread` share subscriptions and unread bytes among sources (None: no share beyond
    MAX_SUBSCRIPTIONS and `max_buffer` per connection); `refusals` hears whom the stream refused or cut."""

    def __init__(self, feed: MarketFeed, status: StatusChannel, *, check_token: TokenCheck, max_clients: int,
                 max_buffer: int, hello: Callable[[], JsonObject], max_per_address: int | None = None,
                 max_per_subnet: int | None = None, subscriptions: Shares | None = None, unread: Shares | None = None,
                 refusals: RefusalLog | None = None) -> None:
        self.feed = feed
        self.status = status
        self.check_token = check_token
        self.max_clients = max_clients
        self.clients_by_source = Shares(max_per_address or max_clients, max_per_subnet or max_clients, max_clients)
        unbounded = max_clients * MAX_SUBSCRIPTIONS
        self.subscriptions_by_source = subscriptions or Shares(unbounded, unbounded, unbounded)
        self.unread = unread
        self.refusals = refusals
        self.max_buffer = max_buffer
        self.hello = hello
        self.rate: PublicBudget | None = None        # the public rate limit, once the API is built
        self.sessions: set[StreamSession] = set()
        self.counters = {"connections": 0, "refused_full": 0, "refused_per_source": 0, "refused_subscriptions": 0,
                         "evicted": 0, "requests": 0, "rate_limited": 0, "bad_requests": 0, "auth_failures": 0,
                         "messages_sent": 0, "bytes_sent": 0}
        self.disconnects: dict[str, int] = {}

    # --- the endpoint ------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or ""
        scope = self.clients_by_source.over(peer)
        if scope == "total" and self._make_room(peer):
            scope = self.clients_by_source.over(peer)
        if scope is not None:
            self._refused(peer, f"ws_clients_{cap_name(scope)}")
            if scope == "total":
                self.counters["refused_full"] += 1
                raise ApiError(503, "too_many_clients", f"this node serves at most {self.max_clients} stream clients")
            self.counters["refused_per_source"] += 1
            raise ApiError(429, "too_many_clients_from_you", f"at most {self.clients_by_source.cap(scope)} stream "
                           f"clients {scope_words(scope)}", retry_after=10.0)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_REQUEST_BYTES, compress=False)
        self.clients_by_source.add(peer)
        try:
            await ws.prepare(request)
        except BaseException:
            self.clients_by_source.remove(peer)
            raise
        session = StreamSession(request.transport, self.max_buffer, peer=peer, on_closed=self._closed,
                                unread=self.unread)
        session.ws = ws
        self.sessions.add(session)
        self.counters["connections"] += 1
        bucket = TokenBucket(REQUEST_RATE, REQUEST_BURST)
        self._event(session, {"event": "info", **self.hello()})
        try:
            async for message in ws:
                if session.closing is not None:
                    break
                session.last_request = time.monotonic()
                if not bucket.try_take():
                    session.close(CLOSE_TOO_MANY_MESSAGES, "too_many_requests",
                                  f"too many requests: more than {REQUEST_RATE:g}/s")
                    break
                if message.type == WSMsgType.TEXT:
                    self._charged_request(session, message.data)
                else:
                    self._error(session, "text_only", "send JSON text frames", None)
        finally:
            session.close(CLOSE_GOING_AWAY, "client_gone")
            await asyncio.shield(session.wait_closed())
        return ws

    def _make_room(self, peer: str) -> bool:
        """Every client slot is taken: close the client with the fewest subscriptions of the most crowded network,
        when that network holds more than the newcomer's would with it. False when none does."""
        held = self.clients_by_source.by_subnet
        if not held:
            return False
        network, most = max(held.items(), key=lambda item: item[1])
        mine = held.get(subnet_of(peer), 0)
        if most > mine + 1:
            crowd = [s for s in self.sessions if s.closing is None and subnet_of(s.peer) == network]
            if crowd:
                victim = min(crowd, key=lambda s: len(s.subscriptions))
                return self._evict(victim, "the stream is full: the busiest network's client makes room")
        if mine:
            return False
        # every network holds one (or as many as ours would): a network not seen here yet still gets in, in place
        # of the client whose last request is the oldest (a newcomer is the freshest); token holders never go
        idle = [s for s in self.sessions if s.closing is None and not s.authenticated]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_request)
        return self._evict(victim, "the stream is full: the client idle the longest makes room")

    def _evict(self, victim: StreamSession, message: str) -> bool:
        self.counters["evicted"] += 1
        self._refused(victim.peer, "ws_client_evicted")
        victim.close(CLOSE_GOING_AWAY, "evicted", message)
        return True

    def _charged_request(self, session: StreamSession, text: str) -> None:
        """One request, within the public rate limit of the client's address unless it sent the token (or its
        address is exempt); charged the event loop's CPU it took. A bug of ours on odd input refuses the request
        and keeps the connection."""
        rate = self.rate
        charged = rate is not None and not session.authenticated and not rate.is_exempt(session.peer)
        reserved = 1.0                  # what `check` took when it let the request go
        if rate is not None and charged:
            refused = rate.check(session.peer)
            if refused is not None:
                if not _is_auth(text):      # the token is heard whatever the address owes (charged in full)
                    self.counters["rate_limited"] += 1
                    which, wait = refused
                    return self._error(session, "rate_limited", f"too many requests without a token "
                                       f"({which.replace('_', ' ')} limit); retry after {wait:.1f} s", None)
                reserved = 0.0
        started = time.thread_time()
        try:
            self.on_request(session, text)
        except Exception as exc:  # noqa: BLE001 - a bug of ours on odd input: refuse it, keep the connection
            log.warning("stream request refused, the node could not handle it: %s: %s", type(exc).__name__, exc,
                        extra={"address": session.peer})
            self._error(session, "invalid_request", "the node could not handle this request", None)
        if rate is not None and charged:
            rate.settle(session.peer, cost_units(time.thread_time() - started), reserved)

    def _closed(self, session: StreamSession, reason: str) -> None:
        """A session ends (any reason): drop its subscriptions, keep its totals."""
        for sub in list(session.subscriptions.values()):
            self._unsubscribe(sub)
        session.subscriptions.clear()
        if session in self.sessions:
            self.sessions.discard(session)
            self.clients_by_source.remove(session.peer)
        self.counters["messages_sent"] += session.messages_sent
        self.counters["bytes_sent"] += session.bytes_sent
        self.disconnects[reason] = self.disconnects.get(reason, 0) + 1
        if reason.startswith("slow_consumer") or reason == "too_many_requests":
            self._refused(session.peer, f"ws_{reason}")

    def _refused(self, peer: str, reason: str) -> None:
        if self.refusals is not None:
            self.refusals.record(peer, reason)

    async def close_all(self) -> None:
        sessions = list(self.sessions)
        for session in sessions:
            session.close(CLOSE_GOING_AWAY, "shutdown", "node shutting down")
        await asyncio.gather(*(s.wait_closed() for s in sessions), return_exceptions=True)

    # --- requests ----------------------------------------------------------------------------
    def on_request(self, session: StreamSession, text: str) -> None:
        self.counters["requests"] += 1
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._error(session, "invalid_json", "the request is not JSON", None)
        if not isinstance(request, dict):
            return self._error(session, "invalid_request", "a request is a JSON object with an event", None)
        req = request.get("req")
        if req is not None and not (isinstance(req, (int, str)) and not isinstance(req, bool) and len(str(req)) <= 64):
            return self._error(session, "invalid_req", "req must be a number or a string of at most 64 characters",
                               None)
        event = request.get("event")
        if event == "subscribe":
            self._subscribe(session, request, req)
        elif event == "unsubscribe":
            chan = request.get("chan")
            sub = session.subscriptions.pop(chan, None) if type(chan) is int else None
            if sub is None:
                return self._error(session, "not_subscribed", f"no subscription with chan {chan!r}", req)
            self._unsubscribe(sub)
            self._event(session, {"event": "unsubscribed", "chan": chan}, req)
        elif event == "auth":
            token = request.get("token")
            if not isinstance(token, str) or not token or len(token) > 512 or not self.check_token(token):
                self.counters["auth_failures"] += 1
                return self._error(session, "auth_failed", "the token is not valid for this node", req)
            session.authenticated = True
            self._event(session, {"event": "auth", "status": "ok"}, req)
        elif event == "ping":
            self._event(session, {"event": "pong", "ts": self.feed.clock()}, req)
        else:
            self._error(session, "unknown_event", "event must be subscribe, unsubscribe, auth or ping", req)

    def _subscribe(self, session: StreamSession, request: JsonObject, req: Json) -> None:
        channel = request.get("channel")
        if len(session.subscriptions) >= MAX_SUBSCRIPTIONS:
            return self._error(session, "too_many_subscriptions",
                               f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection", req)
        depth = request.get("depth", DEFAULT_DEPTH) if channel == "book" else \
            request.get("interval", "1m") if channel == "candles" else None
        key = (channel, request.get("market") if channel in MARKET_CHANNELS else None, depth)
        if any((s.channel, s.info.get("market"), s.info.get("depth", s.info.get("interval"))) == key
               for s in session.subscriptions.values()):
            return self._error(session, "already_subscribed", "this connection already has that subscription", req)
        shares = self.subscriptions_by_source
        scope = shares.over(session.peer)
        if scope is not None:
            self.counters["refused_subscriptions"] += 1
            self._refused(session.peer, f"ws_subscriptions_{cap_name(scope)}")
            return self._error(session, "subscriptions_full" if scope == "total" else "too_many_subscriptions_from_you",
                               f"at most {shares.cap(scope)} subscriptions {scope_words(scope)}", req)
        feed = self.feed
        try:
            if channel == "book":
                sub, snapshot = feed.subscribe_book(session, request.get("market"), depth), feed.book_snapshot
            elif channel == "trades":
                sub, snapshot = feed.subscribe_trades(session, request.get("market")), feed.trades_snapshot
            elif channel == "ticker":
                sub, snapshot = feed.subscribe_ticker(session, request.get("market")), feed.ticker_snapshot
            elif channel == "candles":
                sub, snapshot = feed.subscribe_candles(session, request.get("market"), depth), feed.candles_snapshot
            elif channel == "orders":
                sub, snapshot = feed.subscribe_orders(session), feed.orders_snapshot
            elif channel == "status":
                sub, snapshot = self.status.subscribe(session), self.status.snapshot
            else:
                raise SubscribeError("unknown_channel", f"channel must be one of {', '.join(CHANNELS)}")
        except SubscribeError as exc:
            return self._error(session, exc.code, exc.message, req)
        session.subscriptions[sub.chan] = sub
        shares.add(session.peer)
        self._event(session, {"event": "subscribed", "chan": sub.chan, **sub.info}, req)
        try:
            snapshot(sub)
        except Exception:          # a bug of ours (a source that failed): say so, keep the connection
            log.exception("snapshot for %s failed", channel)
            del session.subscriptions[sub.chan]
            self._unsubscribe(sub)
            self._error(session, "snapshot_failed", "the node could not build the snapshot; see its log", req)

    def _unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions_by_source.remove(sub.session.peer)
        if sub.channel == "status":
            self.status.unsubscribe(sub)
        else:
            self.feed.unsubscribe(sub)

    # --- replies -------------------------------------------------------------------------------
    def _event(self, session: StreamSession, event: dict[str, object], req: Json = None) -> None:
        if req is not None:
            event["req"] = req
        session.send(orjson.dumps(event))

    def _error(self, session: StreamSession, code: str, message: str, req: Json) -> None:
        self.counters["bad_requests"] += 1
        self._event(session, {"event": "error", "code": code, "msg": message}, req)

    # --- observability -------------------------------------------------------------------------
    def stats(self) -> JsonObject:
        live = [s for s in self.sessions]
        subscriptions = self.subscriptions_by_source
        return {"clients": len(live), "max_clients": self.max_clients,
                "max_clients_per_address": self.clients_by_source.per_address,
                "max_clients_per_subnet": self.clients_by_source.per_subnet, "max_buffer_bytes": self.max_buffer,
                "max_subscriptions": {"per_address": subscriptions.per_address, "per_subnet": subscriptions.per_subnet,
                                      "total": subscriptions.total},
                "unread_bytes": sum(s.unread_bytes for s in live),
                "subscriptions": {**self.feed.subscriber_counts(), "status": len(self.status.subs)},
                "counters": dict(self.counters,
                                 messages_sent=self.counters["messages_sent"] + sum(s.messages_sent for s in live),
                                 bytes_sent=self.counters["bytes_sent"] + sum(s.bytes_sent for s in live)),
                "disconnects": dict(self.disconnects)}

