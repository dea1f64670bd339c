"""Tiny synchronous HTTP client for CLI commands: clear errors, no event loop needed."""
from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson


class NodeUnreachable(Exception):
    pass


class ApiFailure(Exception):
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", "request failed"))
        self.status = status
        self.error = error


def call(api: str, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(api.rstrip("/") + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, orjson.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            error = orjson.loads(payload).get("error", {})
        except (orjson.JSONDecodeError, AttributeError):
            error = {"code": "http_error", "message": payload.decode(errors="replace")[:200]}
        raise ApiFailure(exc.code, error) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NodeUnreachable(f"no exchange-node answers at {api} ({reason}); is it running? "
                              f"(start one with `exchange-node start`)") from None
