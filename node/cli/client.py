"""Tiny synchronous HTTP client for CLI commands: clear errors, no event loop needed."""
from __future__ import annotations

import contextlib
import datetime
import http.client
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

# A JSON value the control API answered, as orjson decodes it: each command reads the fields it shows (the API
# reference in docs/api.md gives the shapes). The CLI names it here rather than importing node/api/base.py's
# alias, so `exchange-node status` and friends start without loading aiohttp.
Json = Any
# A JSON object of an answer (a status, an order, an error body, ...), read field by field.
JsonObject = dict[str, Any]


class NodeUnreachable(Exception):
    """Nothing usable answered; `reason` says why in a few words (e.g. "connection refused")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ApiFailure(Exception):
    def __init__(self, status: int, error: JsonObject) -> None:
        super().__init__(error.get("message", "request failed"))
        self.status = status
        self.error = error


def call(url: str, method: str, path: str, body: object = None, timeout: float = 10.0,
         token: str | None = None, *, deadline: float | None = None, max_bytes: int | None = None) -> tuple[int, Json]:
    """One request to the API at base `url`; raises NodeUnreachable or ApiFailure (4xx/5xx, or not JSON).
    `timeout` bounds each socket operation; `deadline` (seconds) the whole exchange and `max_bytes` the answer's
    body, for asking nodes that are not trusted (a node dripping its answer, or sending one without end)."""
    data = orjson.dumps(body) if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    if deadline is not None or max_bytes is not None:
        status, payload = _bounded(request, timeout, deadline, max_bytes)
        if status >= 400:
            raise _failure(status, payload)
        return status, _json(status, payload)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _json(response.status, response.read())
    except urllib.error.HTTPError as exc:
        raise _failure(exc.code, exc.read()) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise NodeUnreachable(_reason(exc, timeout)) from None


def _failure(status: int, payload: bytes) -> ApiFailure:
    try:
        error = orjson.loads(payload).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if not isinstance(error, dict):
        error = {"code": "http_error", "message": f"HTTP {status}: {payload.decode(errors='replace')[:200]}"}
    return ApiFailure(status, error)


def _bounded(request: urllib.request.Request, timeout: float, deadline: float | None, max_bytes: int | None
             ) -> tuple[int, bytes]:
    """(status, body) of `request` over a connection of its own, shut at `deadline` whatever it is doing (urllib's
    timeout is per socket operation: a byte now and then keeps it waiting), the body read only up to `max_bytes`."""
    parts = urllib.parse.urlsplit(request.full_url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "", parts.port, timeout=timeout if deadline is None else min(timeout, deadline))
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        if conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
    timer = threading.Timer(deadline, expire) if deadline is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    response: http.client.HTTPResponse | None = None
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(request.get_method(), target or "/", body=request.data, headers=dict(request.header_items()))
        response = conn.getresponse()
        if max_bytes is not None and (response.length or 0) > max_bytes:
            raise NodeUnreachable(f"the answer is {response.length:,} bytes, over the {max_bytes:,} bytes asked")
        body = bytearray()
        while piece := response.read1(65_536):
            body += piece
            if max_bytes is not None and len(body) > max_bytes:
                raise NodeUnreachable(f"the answer is over the {max_bytes:,} bytes asked")
        if expired.is_set():
            raise NodeUnreachable(f"no whole answer within {deadline:g}s")
        return response.status, bytes(body)
    except (OSError, http.client.HTTPException) as exc:
        raise NodeUnreachable(f"no whole answer within {deadline:g}s" if expired.is_set()
                              else _reason(exc, timeout)) from None
    finally:
        if timer is not None:
            timer.cancel()
        if response is not None:
            response.close()        # its file holds the socket open past conn.close(): a node still sending is cut now
        conn.close()


def _json(status: int, payload: bytes) -> Json:
    try:
        return orjson.loads(payload or b"null")
    except orjson.JSONDecodeError:
        raise ApiFailure(status, {"code": "not_json", "message": "the answer is not JSON: is this an exchange-node "
                                                                 "control API?"}) from None


def _reason(exc: BaseException, timeout: float) -> str:
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g}s"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({cause.strerror or cause})"
    if isinstance(cause, http.client.HTTPException):
        return f"the answer is not HTTP ({type(cause).__name__}): is this the control API port, not the P2P port?"
    if isinstance(cause, OSError):
        return cause.strerror or str(cause) or type(cause).__name__
    return str(cause) or type(cause).__name__


def iso_utc(ms: int) -> str:
    """Milliseconds since the epoch (block time, as the API answers) as ISO-8601 in UTC:
    `2026-11-29T13:46:39.123Z`."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_local(ms: int) -> str:
    """The same moment in this machine's time zone, with its offset: `2026-11-29T14:46:39.123+01:00`."""
    return datetime.datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="milliseconds")


def when(ms: int) -> str:
    """A time for a line a person reads: UTC, and the local time with its offset when that is not UTC."""
    utc, local = iso_utc(ms), iso_local(ms)
    return utc if local.endswith("+00:00") else f"{utc} ({local} local)"


def with_iso(row: JsonObject, *fields: str) -> JsonObject:
    """`row` with an ISO-8601 UTC twin of each epoch-ms field it has (`time_ms` -> `time`, `at` -> `at_iso`,
    `t` -> `time`): `--json` keeps the machine fields and adds the readable ones."""
    added = dict(row)
    for name in fields:
        value = row.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            twin = "time" if name in ("t", "time_ms") else f"{name.removesuffix('_ms')}_iso"
            added[twin] = iso_utc(value)
    return added
