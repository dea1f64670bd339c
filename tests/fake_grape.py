"""FakeGrape: an in-process stand-in for a Grape HTTP API, with fault injection, for tests without Node.js.

It speaks the same wire format as a real grape (docs/protocol.md, "Grenache") over a real loopback socket, keeps
announcements in memory (several fakes can share one `FakeDHT` to behave like bootstrapped grapes)
and can be told to misbehave in each way a real grape or the network does.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web

__all__ = ["FakeDHT", "FakeGrape", "FAULTS"]

#: fault name -> what the fake answers instead of doing the work
FAULTS = ("error", "empty", "http500", "http413", "garbage", "slow", "object")


@dataclass
class FakeDHT:
    """Shared state of a set of fake grapes: announcements with expiry, and immutable put/get values."""

    record_ttl: float = 120.0
    services: dict[str, dict[str, float]] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)

    def announce(self, service: str, address: str) -> None:
        self.services.setdefault(service, {})[address] = time.monotonic() + self.record_ttl

    def lookup(self, service: str) -> list[str]:
        now = time.monotonic()
        entries = self.services.get(service, {})
        for address in [a for a, expiry in entries.items() if expiry <= now]:
            del entries[address]
        return list(entries)[:100]


class FakeGrape:
    """An aiohttp server on 127.0.0.1 answering POST /announce|/lookup|/put|/get like a grape.

    Set `fault` to one of FAULTS (or None) to change how the next requests are answered:
    "error" -> HTTP 200 with `error_code` as a JSON string; "empty" -> HTTP 200, empty body;
    "http500" -> 500 text; "http413" -> 413 ERR_GRAPE_PAYLOAD_SIZE; "garbage" -> 200 non-JSON;
    "slow" -> sleeps `slow_seconds` first; "object" -> a JSON object instead of the expected
    value. `stop()` then `start()` again reuses the same port, to simulate an outage.
    """

    def __init__(self, dht: FakeDHT | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 max_body: int = 8192) -> None:
        self.dht = dht if dht is not None else FakeDHT()
        self.host = host
        self.port = port
        self.max_body = max_body
        self.fault: str | None = None
        self.error_code = "ERR_GRAPE_LOOKUP"
        self.slow_seconds = 5.0
        self.requests: list[tuple[str, object]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    def count(self, verb: str) -> int:
        return sum(1 for v, _ in self.requests if v == verb)

    async def start(self) -> str:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post("/{verb}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.05)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> "FakeGrape":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        verb = request.match_info["verb"]
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="ERR_GRAPE_PAYLOAD_SIZE")
        try:
            msg = orjson.loads(raw)
            data = msg["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.Response(status=500, text="ERR_GRAPE_PAYLOAD_INVALID")
        self.requests.append((verb, data))
        fault = self.fault
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        elif fault == "error":
            return self._json(self.error_code)
        elif fault == "empty":
            return web.Response(status=200, body=b"")
        elif fault == "http500":
            return web.Response(status=500, text="Internal Server Error")
        elif fault == "http413":
            return web.Response(status=413, text="ERR_GRAPE_PAYLOAD_SIZE")
        elif fault == "garbage":
            return web.Response(status=200, text="<html>not json</html>")
        elif fault == "object":
            return self._json({"unexpected": True})
        return self._json_or_empty(self._answer(verb, data, request))

    def _answer(self, verb: str, data: object, request: web.Request) -> object:
        if verb == "announce":
            if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], str)
                    and isinstance(data[1], int)):
                return "ERR_GRAPE_ANNOUNCE"
            peer = request.transport.get_extra_info("peername") if request.transport else None
            host = peer[0] if peer else "127.0.0.1"
            self.dht.announce(data[0], f"{host}:{data[1]}")
            return 1
        if verb == "lookup":
            if not isinstance(data, str):
                return "ERR_GRAPE_LOOKUP"
            return self.dht.lookup(data)
        if verb == "put":
            if not (isinstance(data, dict) and isinstance(data.get("v"), str)):
                return "ERR_GRAPE_PUT"
            if len(data["v"].encode()) >= 1000:
                return "v must be less than 1000 bytes in put()"
            digest = hashlib.sha1(data["v"].encode()).hexdigest()
            self.dht.values[digest] = data["v"]
            return digest
        if verb == "get":
            if not isinstance(data, str):
                return "ERR_GRAPE_GET"
            value = self.dht.values.get(data)
            return None if value is None else {"v": value, "k": data}
        return "ERR_REQ_NOTFOUND"

    def _json_or_empty(self, value: object) -> web.Response:
        if value is None:  # a real grape answers an unknown get with an empty body
            return web.Response(status=200, body=b"")
        return self._json(value)

    @staticmethod
    def _json(value: object) -> web.Response:
        return web.Response(status=200, body=orjson.dumps(value), content_type="application/json")
