"""Tiny synchronous HTTP client for CLI commands: clear errors, no event loop needed."""
from __future__ import annotations

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
