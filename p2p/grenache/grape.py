"""GrapeClient: the Grenache Grape HTTP API (announce, lookup, put, get) with failover between grapes.

Wire format (docs/protocol.md, "Grenache"): every call is `POST <grape>/<verb>` with `{"rid": ..., "data": ...}`.
The answer is JSON: announce -> 1, lookup -> ["ip:port", ...], put -> sha1 hex, get -> {"v": ...}
or an EMPTY body when the hash is unknown. A grape reports its own errors as HTTP 200 with a JSON
string body ("ERR_GRAPE_LOOKUP", "All queries failed"), a body it cannot parse as 500 text and an
oversized body as 413.

Only two exception types leave this module (apart from `asyncio.CancelledError`, which always
propagates): `GrapeError` when a grape answered with an error of its own, and its subclass
`GrapeUnavailable` when no grape gave a usable answer (refused, timed out, 5xx, garbage).
`except GrapeError` therefore catches both.
"""
from __future__ import annotations

import asyncio
import ipaddress
import re
import uuid
from typing import Any, Callable, Sequence, cast

import aiohttp
import orjson

__all__ = ["GrapeClient", "GrapeError", "GrapeUnavailable", "parse_address", "normalize_grape_url"]

_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_ .:-]{0,199}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_MISSING = object()


class GrapeError(Exception):
    """A grape answered the request with an error code, e.g. "ERR_GRAPE_LOOKUP" or "ERR_GRAPE_PAYLOAD_SIZE"."""

    def __init__(self, code: str, detail: str | None = None) -> None:
        self.code = code
        self.detail = detail
        super().__init__(code if not detail else f"{code}: {detail}")


class GrapeUnavailable(GrapeError):
    """No grape gave a usable answer: connection refused, timeout, HTTP 5xx or a malformed reply."""

    def __init__(self, detail: str) -> None:
        super().__init__("ERR_GRAPE_UNAVAILABLE", detail)


class _BadReply(Exception):
    """Internal: this grape's answer is unusable; try the next one."""


def normalize_grape_url(url: str) -> str:
    """'127.0.0.1:30001' -> 'http://127.0.0.1:30001'; strips a trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def parse_address(text: object) -> tuple[str, int] | None:
    """Parse a Grape lookup entry into (host, port), or None when it is not a valid address.

    Accepts "1.2.3.4:1337", "[::1]:1337" and the unbracketed "::1:1337" that Grape produces for
    IPv6 peers (it joins host and port with a bare colon). Hosts are IP literals or DNS names;
    IPv6 hosts come back without brackets, in compressed form.
    """
    if not isinstance(text, str) or len(text) > 300:
        return None
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            return None
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        return None
    port = int(port_text)
    if not 0 < port < 65536 or not host:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if ":" in host or not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
            return None
        return host.lower(), port
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), port
    return str(ip), port


class GrapeClient:
    """Talks to one of several grapes over HTTP, failing over in order and remembering the last good one.

    Every call tries each URL once at most, starting with the one that answered last time, each
    attempt bounded by `timeout` seconds. The aiohttp session is created lazily on first use, in
    the running loop, and released by `close()`.
    """

    def __init__(self, urls: Sequence[str], *, timeout: float = 2.0) -> None:
        if isinstance(urls, str):
            urls = [urls]
        self.urls: list[str] = [normalize_grape_url(u) for u in urls if u and u.strip()]
        if not self.urls:
            raise ValueError("GrapeClient needs at least one grape URL")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = float(timeout)
        self._preferred = 0
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def current_url(self) -> str:
        """The URL tried first on the next call (the last one that answered)."""
        return self.urls[self._preferred]

    async def announce(self, service: str, port: int) -> None:
        """Announce that `service` listens on `port` of this host (the grape records its own IP)."""
        if not isinstance(service, str) or not service:
            raise ValueError("service must be a non-empty string")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"invalid port {port!r}")
        await self._call("announce", [service, port], lambda v: v is not _MISSING)

    async def lookup(self, service: str) -> list[tuple[str, int]]:
        """Addresses announced for `service` (deduplicated, invalid entries dropped); [] when none."""
        if not isinstance(service, str) or not service:
            raise ValueError("service must be a non-empty string")
        raw = await self._call("lookup", service, lambda v: isinstance(v, list))
        found: list[tuple[str, int]] = []
        for entry in raw:
            address = parse_address(entry)
            if address is not None and address not in found:
                found.append(address)
        return found

    async def put(self, value: str) -> str:
        """Store an immutable string in the DHT (Grape expects under 1000 bytes); returns its sha1 hex."""
        if not isinstance(value, str):
            raise TypeError("value must be a str")
        return cast("str", await self._call("put", {"v": value}, lambda v: isinstance(v, str) and bool(v)))

    async def get(self, hash: str) -> str | None:     # `hash`: the Grape API's own name
        """The string stored under `hash`, or None when the DHT does not know it."""
        if not isinstance(hash, str) or not hash:
            raise ValueError("hash must be a non-empty string")
        result = await self._call("get", hash,
                                  lambda v: v is _MISSING or v is None or (isinstance(v, dict) and "v" in v))
        if result is _MISSING or result is None:
            return None
        value = result["v"]
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and value.get("type") == "Buffer" and isinstance(value.get("data"), list):
            try:  # a value put by a Node client as a Buffer comes back in its JSON form
                return bytes(value["data"]).decode("utf-8", "replace")
            except (ValueError, TypeError):
                return None
        return orjson.dumps(value).decode()

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def __aenter__(self) -> "GrapeClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise GrapeUnavailable("client closed")
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=16, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    async def _call(self, verb: str, data: Any, accept: Callable[[Any], bool]) -> Any:
        """POST to each grape in turn; the first usable answer wins.

        An error code from a grape (a JSON string, or a 4xx with an ERR_ text) is remembered and
        the next grape is tried, since grapes hold separate DHT views; if none succeeds the last
        such code is raised as GrapeError, and when no grape answered at all, GrapeUnavailable.
        """
        session = self._get_session()
        body = orjson.dumps({"rid": str(uuid.uuid4()), "data": data})
        answered: GrapeError | None = None
        failure = "no grape tried"
        count = len(self.urls)
        for step in range(count):
            index = (self._preferred + step) % count
            url = self.urls[index]
            try:
                value = await self._post(session, f"{url}/{verb}", body)
                if isinstance(value, str) and not (verb == "put" and _is_hex(value)):
                    raise GrapeError(value)  # Grape's own errors: HTTP 200 with a JSON string
                if not accept(value):
                    raise _BadReply(f"unexpected {verb} reply {_preview(value)}")
            except GrapeUnavailable as exc:
                failure = f"{url}: {exc.detail}"
                continue
            except GrapeError as exc:
                answered = exc
                continue
            except _BadReply as exc:
                failure = f"{url}: {exc}"
                continue
            self._preferred = index
            return value
        if answered is not None:
            raise answered
        raise GrapeUnavailable(failure)

    async def _post(self, session: aiohttp.ClientSession, url: str, body: bytes) -> Any:
        """One HTTP exchange, with every transport problem turned into GrapeUnavailable."""
        try:
            async with asyncio.timeout(self.timeout + 0.5):  # belt and braces over ClientTimeout
                async with session.post(url, data=body, headers={"content-type": "application/json"},
                                        allow_redirects=False) as resp:
                    raw = await resp.read()
                    status = resp.status
        except (asyncio.TimeoutError, TimeoutError):
            raise GrapeUnavailable(f"timed out after {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise GrapeUnavailable(f"{type(exc).__name__}: {exc}") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise GrapeUnavailable(f"{type(exc).__name__}: {exc}") from None
        if status != 200:
            text = raw[:200].decode("utf-8", "replace").strip()
            if status == 413:
                raise GrapeError("ERR_GRAPE_PAYLOAD_SIZE", f"HTTP 413 {text}")
            if 400 <= status < 500 and _ERROR_CODE.match(text) and text.startswith("ERR_"):
                raise GrapeError(text, f"HTTP {status}")
            raise GrapeUnavailable(f"HTTP {status} {text!r}")
        if not raw.strip():
            return _MISSING
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _BadReply(f"non-JSON reply {_preview(raw)}") from None


def _is_hex(value: str) -> bool:
    return len(value) == 40 and all(c in "0123456789abcdefABCDEF" for c in value)


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
