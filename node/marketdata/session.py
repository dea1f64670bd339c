"""One WebSocket client of the stream: its subscriptions and its bounded send buffer.

Messages for a client are framed and collected during an event-loop pass, then written with one
`transport.write`. What the client has not read yet waits in the transport's buffer; when a new
batch is due and that buffer already holds more than `max_buffer` bytes, the client is too slow:
it is cut off with close code 4008 and everything queued for it is dropped. A client therefore
never holds more than `max_buffer` bytes plus one batch of the node's memory, and a client that
keeps up is never cut off however large a single batch is.

The clients of one address, of one network and of the whole node share budgets of unread bytes too
(`unread`, a `Shares` of bytes): each session reports what its buffer holds whenever it writes, and a
client that is behind (its buffer not empty) while its address or its network is over budget is cut off
the same way, so many slow readers from one source cannot add up to the node's memory while clients that
keep up are never cut for them; while the node as a whole is over budget, only clients of the heaviest
networks (at least half what the heaviest holds) are cut, never a light bystander that is a little behind.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Protocol

from node.marketdata.wsframe import text_frame
from p2p.public.sources import Shares, scope_words

log = logging.getLogger("node.stream")

CLOSE_SLOW_CONSUMER = 4008
CLOSE_TOO_MANY_MESSAGES = 4029
CLOSE_GOING_AWAY = 1001
CLOSE_GRACE = 5.0     # seconds a closing client has to take the close frame before the socket is dropped

# What a channel keys its subscribers by: the market, or (market, depth) for a book, (market, interval) for
# candles; the channel's own code builds it and unpacks it, so its shape is that channel's.
SubscriptionKey = Any


class Transport(Protocol):
    """What a session does with its connection's transport (aiohttp's asyncio transport is one)."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...

    def abort(self) -> None: ...


class Subscription:
    """One channel a client subscribed to: its channel id on that connection and its sequence number."""

    __slots__ = ("session", "chan", "seq", "channel", "key", "info")

    def __init__(self, session: "StreamSession", chan: int, channel: str, key: SubscriptionKey,
                 info: dict[str, object]) -> None:
        self.session = session
        self.chan = chan
        self.seq = 0
        self.channel = channel
        self.key = key          # what the channel keys its subscribers by, e.g. ("BTC-USD", 25)
        self.info = info        # echoed in the `subscribed` event

    def send(self, body: bytes) -> None:
        """Send a data message (`body`: a JSON object) stamped with this subscription's id and next seq."""
        self.session.send(b'{"chan":%d,"seq":%d,%s' % (self.chan, self.seq, body[1:]))
        self.seq += 1


class StreamSession:
    def __init__(self, transport: Transport | None, max_buffer: int, *, peer: str = "",
                 on_closed: Callable[["StreamSession", str], None] | None = None, unread: Shares | None = None) -> None:
        self.transport = transport
        self.max_buffer = max_buffer
        self.peer = peer
        self.unread = unread
        self._reported = 0                   # the bytes of its buffer this session last reported to `unread`
        self.subscriptions: dict[int, Subscription] = {}
        self.authenticated = False
        self.last_request = time.monotonic()  # when it connected or last asked: the idlest makes room (server.py)
        self.closing: str | None = None      # the reason, once closing
        self.messages_sent = 0
        self.bytes_sent = 0
        self._next_chan = 1
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._on_closed = on_closed
        self._close_task: asyncio.Task[None] | None = None
        self.ws: Any = None                  # the aiohttp WebSocketResponse, for the close handshake

    @property
    def unread_bytes(self) -> int:
        """What this client costs the node now: written but unread, plus not yet written."""
        transport = self.transport
        buffered = transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0
        return buffered + self._pending_bytes

    def new_chan(self) -> int:
        chan = self._next_chan
        self._next_chan += 1
        return chan

    # --- sending ------------------------------------------------------------------------------
    def send(self, payload: bytes) -> None:
        if self.closing is not None:
            return
        frame = text_frame(payload)
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        if self.closing is not None or not self._pending:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            self.close(CLOSE_GOING_AWAY, "connection_lost")
            return
        buffered = transport.get_write_buffer_size()
        if buffered > self.max_buffer:
            self.close(CLOSE_SLOW_CONSUMER, "slow_consumer", f"slow consumer: more than {self.max_buffer} bytes unread")
            return
        self._report(buffered)
        if buffered and self.unread is not None and (scope := self.unread.over(self.peer, 0)) is not None \
                and (scope != "total" or self.unread.among_heaviest(self.peer)):
            self.close(CLOSE_SLOW_CONSUMER, f"slow_consumer_{scope}",
                       f"slow consumer: more than {self.unread.cap(scope)} bytes unread by clients {scope_words(scope)}")
            return
        transport.write(b"".join(self._pending) if len(self._pending) > 1 else self._pending[0])
        self.messages_sent += len(self._pending)
        self.bytes_sent += self._pending_bytes
        self._pending.clear()
        self._pending_bytes = 0
        self._report(transport.get_write_buffer_size())

    def _report(self, buffered: int) -> None:
        if self.unread is not None and buffered != self._reported:
            self.unread.add(self.peer, buffered - self._reported)
            self._reported = buffered

    # --- closing ------------------------------------------------------------------------------
    def close(self, code: int, reason: str, message: str = "") -> None:
        """Stop sending, forget the subscriptions, and close the socket with `code` and `message` (default:
        the `reason` code). The close frame follows whatever the client has not read yet; a client
        that does not take it within CLOSE_GRACE is dropped."""
        if self.closing is not None:
            return
        self.closing = reason
        self._pending.clear()
        self._pending_bytes = 0
        self._report(0)                      # what it still holds is dropped within CLOSE_GRACE
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if code in (CLOSE_SLOW_CONSUMER, CLOSE_TOO_MANY_MESSAGES):
            log.warning("stream client cut off: %s", message or reason, extra={"address": self.peer, "reason": reason})
        if self._on_closed is not None:
            self._on_closed(self, reason)
        if self.ws is not None:
            self._close_task = asyncio.get_running_loop().create_task(self._close(code, message or reason))

    async def wait_closed(self) -> None:
        """Until the close handshake is over or the connection dropped (at once if it never started)."""
        if self._close_task is not None:
            await self._close_task

    async def _close(self, code: int, message: str) -> None:
        transport = self.transport
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()[:120]), CLOSE_GRACE)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            if transport is not None:
                transport.abort()            # frees whatever the client never read
            return
        # a close handshake the client finished means it read everything before it; a socket aiohttp had
        # already closed (a missed heartbeat pong) may still hold what the client never read, and an asyncio
        # transport keeps a closing socket until its buffer is written, however long that takes
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()
