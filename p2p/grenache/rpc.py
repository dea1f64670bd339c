"""Grenache HTTP RPC, wire-compatible with grenache-nodejs-http: a client that calls Node workers and a
server that Node PeerRPCClients can call.

Wire format (docs/protocol.md, "Grenache"): the client POSTs the JSON array `[rid, key, payload]` to `/` with header
`grc-compress: none`, or `gzip` with the body gzipped; the worker answers HTTP 200 with
`[rid, null, data]` or `[rid, "ERR_...", null]`, gzipped when the request was. No
Content-Encoding header is used in either direction (the Node client gunzips by itself and would
fail on an already-decoded body).

Client errors are typed, all subclasses of `GrenacheError`: `GrenacheRemoteError(code)` (the worker
answered with an error), `GrenacheTimeout` (no answer in time; the request may have run),
`GrenacheUnavailable` (could not connect, connection lost: transport trouble) and
`GrenacheProtocolError` (an answer that is not a Grenache reply).
"""
from __future__ import annotations

import asyncio
import gzip
import logging
import re
import uuid
import zlib
from typing import Any, Awaitable, Callable, Mapping

import aiohttp
import orjson
from aiohttp import web

from p2p.grenache.limits import KEEPALIVE_TIMEOUT, ServerLimits
from p2p.public.guard import GuardedSite, install_guard

__all__ = ["GrenacheHTTPClient", "GrenacheHTTPServer", "GrenacheError", "GrenacheRemoteError",
           "GrenacheUnavailable", "GrenacheTimeout", "GrenacheProtocolError", "GrenacheJson", "Handler"]

log = logging.getLogger(__name__)

# A Grenache payload or result: the JSON value in the third slot of `[rid, key, payload]` and of a reply.
# Any because JSON carries no static type and this layer only carries it: the handler that serves it, or the
# caller that gets it back, checks it.
GrenacheJson = Any
Handler = Callable[[GrenacheJson], Awaitable[GrenacheJson]]

DEFAULT_MAX_BODY = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
GZIP_MAX_RATIO = 20           # a body may inflate to at most this many times its compressed size ...
GZIP_FREE_BYTES = 64 * 1024   # ... or this many bytes, whichever is more (JSON of base64 frames inflates ~1.3x)
_ERR_TEXT = re.compile(r"^ERR_[A-Z0-9_]{1,100}$")


class GrenacheError(Exception):
    """Base of every error GrenacheHTTPClient raises; `code` is a Grenache-style "ERR_..." string."""

    code = "ERR_GRENACHE"

    def __init__(self, code: str | None = None, detail: str | None = None) -> None:
        if code is not None:
            self.code = code
        self.detail = detail
        super().__init__(self.code if not detail else f"{self.code}: {detail}")


class GrenacheRemoteError(GrenacheError):
    """The worker answered with an error string, e.g. "ERR_BOOM". Handlers of GrenacheHTTPServer may
    raise it too, to answer with their own code."""


class GrenacheUnavailable(GrenacheError):
    """Transport trouble: connection refused or reset, server gone, HTTP 5xx without a Grenache reply."""

    code = "ERR_REQUEST_GENERIC"


class GrenacheTimeout(GrenacheError):
    """No reply within the timeout. The worker may still have executed the request."""

    code = "ERR_TIMEOUT"


class GrenacheProtocolError(GrenacheError):
    """The peer answered, but not with a Grenache reply (not a 3-element array, wrong rid, too big)."""

    code = "ERR_REPLY_INVALID"


def _url(address: tuple[str, int]) -> str:
    host, port = address
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{int(port)}/"


def inflate_limit(size: int, limit: int) -> int:
    """The most a gzipped body of `size` bytes is inflated to (`_gunzip`), with `limit` the largest body."""
    return min(limit, max(GZIP_FREE_BYTES, GZIP_MAX_RATIO * size))


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most `limit` bytes, and at most GZIP_MAX_RATIO times `data` (past GZIP_FREE_BYTES): a gzip
    bomb inflating a few kilobytes into megabytes of tiny JSON objects cost the node a core for each request it
    was charged one unit for. ValueError when it would be more."""
    limit = inflate_limit(len(data), limit)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise ValueError("decompressed body too large")
    return out


class GrenacheHTTPClient:
    """Calls Grenache HTTP workers at known addresses over one pooled aiohttp session.

    `request(address, service_key, payload, timeout)` returns the worker's `data` or raises one of
    the typed errors above; `asyncio.CancelledError` always propagates. Created lazily in the
    running loop; release with `close()`.
    """

    def __init__(self, *, timeout: float = 10.0, compress: bool = False, max_reply_bytes: int = DEFAULT_MAX_BODY,
                 pool_size: int = 100, pool_size_per_host: int = 0, keepalive_timeout: float = 4.0) -> None:
        # keepalive_timeout stays under Node's default server keep-alive (5 s), so a pooled
        # connection is never reused just as the worker closes it.
        self.timeout = timeout
        self.compress = compress
        self.max_reply_bytes = max_reply_bytes
        self._pool = (pool_size, pool_size_per_host, keepalive_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise GrenacheUnavailable(detail="client closed")
        if self._session is None or self._session.closed:
            limit, per_host, keepalive = self._pool
            connector = aiohttp.TCPConnector(limit=limit, limit_per_host=per_host, keepalive_timeout=keepalive)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def request(self, address: tuple[str, int], service_key: str, payload: GrenacheJson,
                      timeout: float | None = None, *, compress: bool | None = None) -> GrenacheJson:
        timeout = self.timeout if timeout is None else timeout
        compress = self.compress if compress is None else compress
        rid = str(uuid.uuid4())
        try:
            body = orjson.dumps([rid, service_key, payload])
        except TypeError as exc:
            raise GrenacheProtocolError("ERR_REQUEST_ENCODING", str(exc)) from None
        if compress:
            body = gzip.compress(body, compresslevel=6)
        session = self._get_session()
        headers = {"grc-compress": "gzip" if compress else "none", "content-type": "application/json"}
        try:
            async with asyncio.timeout(timeout):
                async with session.post(_url(address), data=body, headers=headers, allow_redirects=False) as resp:
                    status = resp.status
                    raw = await self._read_limited(resp)
        except (asyncio.TimeoutError, TimeoutError):
            raise GrenacheTimeout(detail=f"no reply from {address[0]}:{address[1]} within {timeout:g}s") from None
        except GrenacheError:
            raise
        except aiohttp.ClientError as exc:
            raise GrenacheUnavailable(detail=f"{type(exc).__name__}: {exc}") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise GrenacheUnavailable(detail=f"{type(exc).__name__}: {exc}") from None
        return self._parse_reply(rid, status, raw, compress)

    async def _read_limited(self, resp: aiohttp.ClientResponse) -> bytes:
        if resp.content_length is not None and resp.content_length > self.max_reply_bytes:
            raise GrenacheProtocolError("ERR_REPLY_TOO_LARGE", f"{resp.content_length} bytes")
        chunks, size = [], 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > self.max_reply_bytes:
                raise GrenacheProtocolError("ERR_REPLY_TOO_LARGE", f"over {self.max_reply_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse_reply(self, rid: str, status: int, raw: bytes, compressed: bool) -> Any:
        if raw.startswith(_GZIP_MAGIC) and (compressed or status != 200):
            try:
                raw = _gunzip(raw, self.max_reply_bytes)
            except (ValueError, zlib.error, EOFError) as exc:
                raise GrenacheProtocolError("ERR_REPLY_ENCODING_COMPRESSION", str(exc)) from None
        try:
            reply = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            reply = None
        if not (isinstance(reply, list) and len(reply) == 3):
            text = raw[:200].decode("utf-8", "replace").strip()
            if status == 200:
                raise GrenacheProtocolError("ERR_REPLY_EMPTY" if not text else "ERR_REPLY_INVALID", repr(text[:80]))
            if _ERR_TEXT.match(text):
                raise GrenacheRemoteError(text, f"HTTP {status}")
            if status >= 500:
                raise GrenacheUnavailable(detail=f"HTTP {status} {text[:80]!r}")
            raise GrenacheRemoteError(f"ERR_HTTP_{status}", text[:80] or None)
        reply_rid, err, data = reply
        if err:  # like the Node client: any truthy error field is an error
            raise GrenacheRemoteError(err if isinstance(err, str) else orjson.dumps(err).decode())
        if reply_rid != rid:
            raise GrenacheProtocolError("ERR_REPLY_RID_MISMATCH", f"sent {rid}, got {reply_rid!r}")
        if status != 200:
            raise GrenacheUnavailable(detail=f"HTTP {status}")
        return data

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def __aenter__(self) -> "GrenacheHTTPClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _busy(wait: float) -> web.Response:
    return web.Response(status=429, text="ERR_BUSY", headers={"Retry-After": str(max(1, round(wait + 0.5)))})


class _Admitted:
    """One request admitted on `reserved` units, settled once with what it turned out to be worth."""

    __slots__ = ("limits", "address", "reserved", "read")

    def __init__(self, limits: ServerLimits, address: str, reserved: int) -> None:
        self.limits, self.address, self.reserved = limits, address, reserved
        self.read = 0       # bytes of body read (inflated, when compressed) so far

    def settle(self, units: int) -> bool:
        """False when the limits refuse what it turned out to be worth (it is answered busy, unhandled)."""
        reserved, self.reserved = self.reserved, 0
        return not reserved or self.limits.settle(self.address, units, reserved)


class GrenacheHTTPServer:
    """An aiohttp HTTP server answering Grenache RPC requests, callable from Node PeerRPCClients.

    `handlers` maps a service key to `async def handler(payload) -> data`. Every request with a
    readable rid gets HTTP 200 and `[rid, err, data]`: err is None on success, else a string. A
    handler exception whose `code` attribute is an "ERR_..." string (GrenacheRemoteError("ERR_X")
    for instance) answers with that code; any other exception answers "ERR_SERVICE_FAILED" and is
    logged here, never sent. An unknown key answers "ERR_SERVICE_UNKNOWN", a handler slower than
    `handler_timeout` "ERR_TIMEOUT". A request whose rid cannot be read (not JSON, not an array,
    over `max_body_bytes`) gets a non-200 status with a plain "ERR_..." text: the Node client
    then fails at once, whereas an array with a null rid would leave it waiting for its timeout.
    Streaming requests (grenache `_gr` header) are not supported.

    With `limits` (p2p/grenache/limits.py) connections pass its guard, and a request from a client past its
    rate is refused before its body is read, the same way: 429 "ERR_BUSY" with Retry-After. `cost(payload)`
    says what a request it read is worth in the limits' units (1 when not given), at most `max_cost`: a request
    is admitted on `max_cost` units and its client gets back what it did not cost once it is decoded (or, when
    the total cannot cover that cost, it is answered ERR_BUSY unhandled). With `unit_bytes` a request is also worth
    a unit per `unit_bytes` of its body, whichever is more: reading and decoding a body costs by its bytes, and a
    client sending few large requests would otherwise take the node's CPU for a unit each. It is admitted on what
    its Content-Length says it is worth (its most, the largest body, when it gives none) and charged its
    decompressed size once read; a body refused as too large was read up to the largest and costs that.
    """

    def __init__(self, handlers: Mapping[str, Handler], host: str = "127.0.0.1", port: int = 0, *,
                 max_body_bytes: int = DEFAULT_MAX_BODY, handler_timeout: float | None = None,
                 limits: ServerLimits | None = None, cost: Callable[[GrenacheJson], int] | None = None,
                 max_cost: int = 1, unit_bytes: int | None = None) -> None:
        self.handlers = handlers
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.handler_timeout = handler_timeout
        self.limits = limits
        self.cost = cost
        self.max_cost = max_cost if cost is not None else 1
        self.unit_bytes = unit_bytes
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port=0)."""
        if self._runner is not None:
            return self.port
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/", self._handle)
        if self.limits is not None:
            install_guard(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                               keepalive_timeout=KEEPALIVE_TIMEOUT)
        await runner.setup()
        try:
            site = (web.TCPSite(runner, self.host, self.port, reuse_address=True) if self.limits is None
                    else GuardedSite(runner, self.host, self.port, self.limits.guard))
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> "GrenacheHTTPServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        address = request.remote or ""
        limits = self.limits
        if limits is None or limits.is_exempt(address):
            return await self._answer(request, None)
        reserve = max(self.max_cost, self._byte_units(min(self.max_body_bytes, request.content_length
                                                           if request.content_length is not None
                                                           else self.max_body_bytes)))
        wait = limits.admit(address, reserve)
        if wait is not None:
            return _busy(wait)
        admitted = _Admitted(limits, address, reserve)
        try:
            return await self._answer(request, admitted)
        finally:    # not read or not decoded: worth one unit, or its bytes
            admitted.settle(max(1, self._byte_units(admitted.read)))

    def _byte_units(self, size: int) -> int:
        """What `size` bytes of body are worth in the limits' units (0 when only requests or frames count)."""
        return -(-size // self.unit_bytes) if self.unit_bytes else 0

    async def _answer(self, request: web.Request, admitted: _Admitted | None) -> web.Response:
        """Read, decode and answer one request (`admitted` is settled once its cost is known)."""
        compressed = "gzip" in request.headers.get("grc-compress", "")
        try:
            raw = await request.read()
            if admitted is not None:
                admitted.read = len(raw)
        except web.HTTPRequestEntityTooLarge:
            if admitted is not None:    # read up to the largest body before it was found too large
                admitted.read = self.max_body_bytes
            return web.Response(status=413, text="ERR_REQUEST_TOO_LARGE")
        except ConnectionError:     # cut by the guard past its body deadline (or the client left): nobody to answer
            return web.Response(status=408, text="ERR_REQUEST_TIMEOUT")
        if compressed and raw.startswith(_GZIP_MAGIC):
            try:
                raw = _gunzip(raw, self.max_body_bytes)
                if admitted is not None:
                    admitted.read = len(raw)
            except ValueError:
                if admitted is not None:    # inflated as far as it may be before it was found too large
                    admitted.read = inflate_limit(len(raw), self.max_body_bytes)
                return web.Response(status=413, text="ERR_REQUEST_TOO_LARGE")
            except (zlib.error, EOFError):
                return web.Response(status=400, text="ERR_REQUEST_ENCODING_COMPRESSION")
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = None
        if not (isinstance(message, list) and message and isinstance(message[0], (str, int))
                and not isinstance(message[0], bool)):
            return web.Response(status=400, text="ERR_REQUEST_INVALID")
        rid = message[0]
        key = message[1] if len(message) > 1 else None
        payload = message[2] if len(message) > 2 else None
        units = min(self.max_cost, max(1, self.cost(payload))) if self.cost is not None else 1
        if admitted is not None and not admitted.settle(max(units, self._byte_units(len(raw)))):
            return _busy(1.0)
        err, data = await self._dispatch(key, payload)
        return self._reply(rid, err, data, compressed)

    async def _dispatch(self, key: Any, payload: Any) -> tuple[str | None, Any]:
        if not isinstance(key, str):
            return "ERR_REQUEST_INVALID", None
        handler = self.handlers.get(key)
        if handler is None:
            return "ERR_SERVICE_UNKNOWN", None
        try:
            if self.handler_timeout is None:
                return None, await handler(payload)
            async with asyncio.timeout(self.handler_timeout):
                return None, await handler(payload)
        except asyncio.CancelledError:
            raise
        except (asyncio.TimeoutError, TimeoutError):
            log.warning("grenache handler %r timed out after %ss", key, self.handler_timeout)
            return "ERR_TIMEOUT", None
        except Exception as exc:  # any handler failure becomes an error string
            code = getattr(exc, "code", None)
            if isinstance(code, str) and code.startswith("ERR_") and len(code) <= 200:
                return code, None
            log.warning("grenache handler %r failed: %r", key, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return "ERR_SERVICE_FAILED", None

    def _reply(self, rid: Any, err: str | None, data: Any, compressed: bool) -> web.Response:
        try:
            body = orjson.dumps([rid, err, data])
        except TypeError as exc:
            log.warning("grenache reply for rid %r not JSON-encodable: %s", rid, exc)
            body = orjson.dumps([rid, "ERR_REPLY_ENCODING", None])
        if compressed:
            body = gzip.compress(body, compresslevel=6)
        return web.Response(status=200, body=body, content_type="application/json")
