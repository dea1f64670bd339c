"""A market data stream client as a user would write one from docs/api.md ("Market data stream"): it keeps a local copy of
a book from snapshot + updates, checks sequence numbers and the checksum (implemented here from
that description, independently of the node's code: the Python client library's book)."""
from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from exchange_node_client import LocalBook as ClientBook


class SequenceGap(AssertionError):
    pass


class LocalBook(ClientBook):
    """A client's copy of one book subscription: the Python client library's book (clients/python), with the
    sequence numbers and the depth checked strictly, so every stream test checks that library too."""

    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.seq = -1

    def apply(self, message: dict[str, Any]) -> bool:
        if message["seq"] != self.seq + 1:
            raise SequenceGap(f"expected seq {self.seq + 1}, got {message['seq']}")
        self.seq = message["seq"]
        matches = super().apply(message)
        assert len(self.sides["bids"]) <= self.depth and len(self.sides["asks"]) <= self.depth
        assert matches, "book checksum mismatch"
        return matches


class StreamClient:
    """One /ws connection: send requests, read replies and data per channel, in order."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.info: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.data: dict[int, list[dict[str, Any]]] = {}

    @classmethod
    async def connect(cls, api_url: str, *, local_address: str | None = None, **kwargs: Any) -> "StreamClient":
        """`local_address`: the source address to connect from (127.0.0.2, 127.0.1.5 ... on loopback)."""
        connector = aiohttp.TCPConnector(local_addr=(local_address, 0)) if local_address else None
        session = aiohttp.ClientSession(connector=connector)
        try:
            ws = await session.ws_connect(api_url.replace("http", "ws", 1) + "/ws", **kwargs)
        except BaseException:
            await session.close()
            raise
        client = cls(session, ws)
        client.info = await client.next_event()
        assert client.info["event"] == "info"
        return client

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()

    async def receive(self, timeout: float = 20.0) -> dict[str, Any]:
        message = await self.ws.receive(timeout)
        if message.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"stream ended: {message.type.name} {message.data!r} {message.extra!r}")
        decoded = message.json()
        if "event" in decoded:
            self.events.append(decoded)
        else:
            self.data.setdefault(decoded["chan"], []).append(decoded)
        return decoded

    async def next_event(self, timeout: float = 20.0) -> dict[str, Any]:
        while True:
            message = await self.receive(timeout)
            if "event" in message:
                return message

    async def request(self, **request: Any) -> dict[str, Any]:
        await self.ws.send_json(request)
        return await self.next_event()

    async def subscribe(self, channel: str, **fields: Any) -> int:
        reply = await self.request(event="subscribe", channel=channel, **fields)
        assert reply["event"] == "subscribed", reply
        return reply["chan"]

    async def wait_for(self, predicate, timeout: float = 30.0) -> None:
        """Read until `predicate()` holds (each message is recorded as it arrives)."""
        async def loop() -> None:
            while not predicate():
                await self.receive(timeout)
        await asyncio.wait_for(loop(), timeout)
