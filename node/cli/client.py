"""Tiny synchronous HTTP client for CLI commands: clear errors, no event loop needed."""
from __future__ import annotations

import datetime
import http.client
import socket
import urllib.error
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
         token: str | None = None) -> tuple[int, Json]:
    """One request to the API at base `url`; raises NodeUnreachable or ApiFailure (4xx/5xx, or not JSON)."""
    data = orjson.dumps(body) if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _json(response.status, response.read())
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            error = orjson.loads(payload).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        if not isinstance(error, dict):
            error = {"code": "http_error", "message": f"HTTP {exc.code}: {payload.decode(errors='replace')[:200]}"}
        raise ApiFailure(exc.code, error) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise NodeUnreachable(_reason(exc, timeout)) from None


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
