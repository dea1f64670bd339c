"""Logging set-up: one line per event, human text by default, JSON lines with LOG_FORMAT=json.

Structured fields. A call site that knows which peer, order, market, address or reason a line is
about passes it through the standard `extra` mapping, with these names only:

    log.warning("dial failed", extra={"peer": node_id, "address": "10.0.0.7:7946", "reason": "refused"})

| field     | what it holds                                              |
|-----------|------------------------------------------------------------|
| `node`    | this node's id (stamped on every line by `bind_node`)      |
| `peer`    | the full node id of the peer the line is about             |
| `order`   | a full order id                                            |
| `market`  | a market symbol, e.g. BTC-USD                              |
| `reason`  | a short machine-readable cause, e.g. `network_mismatch`    |
| `address` | a `host:port` (or URL) that was dialled, bound or refused  |

JSON lines carry each field given as its own key (`node` always, null until the identity is
loaded); text lines append them as `key=value`. `extra` needs no import, so every layer (p2p
included) can follow the convention; tests/unit/node/test_logs.py refuses any other `extra` key.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

import orjson
from aiohttp.http_exceptions import HttpProcessingError

FIELDS = ("node", "peer", "order", "market", "reason", "address")
_CALL_SITE_FIELDS = FIELDS[1:]


class NodeStamp(logging.Filter):
    """Puts this node's id on every record that passes the handler."""

    def __init__(self) -> None:
        super().__init__()
        self.node_id: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "node": getattr(record, "node", None),
        }
        for name in _CALL_SITE_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        shown = [f"{name}={value}" for name in _CALL_SITE_FIELDS
                 if (value := getattr(record, name, None)) is not None]
        return f"{line} [{' '.join(shown)}]" if shown else line


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs each malformed HTTP request a client sends (a bad header, a broken chunk) as an ERROR with a
    traceback: the client's doing, not the node's, and as many lines as it cares to send. Such a record becomes one
    WARNING line without the traceback, at most one a `period`, and says how many were left out since the last;
    every other record (an error of ours) passes as it is."""

    def __init__(self, period: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.period, self.clock = period, clock
        self._next = float("-inf")
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = self.clock()
        if now < self._next:
            self.left_out += 1
            return False
        self._next = now + self.period
        more = f"; {self.left_out} more since the last such line" if self.left_out else ""
        self.left_out = 0
        record.msg = f"malformed HTTP request: {record.getMessage()}: {type(exc).__name__} {str(exc)[:160]!r}{more}"
        record.args = ()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


_stamp = NodeStamp()
_malformed_requests = MalformedRequestFilter()


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_stamp)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "zeroconf", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    server = logging.getLogger("aiohttp.server")
    if _malformed_requests not in server.filters:
        server.addFilter(_malformed_requests)


def bind_node(node_id: str | None) -> None:
    """From now on every line carries `node_id` (called once the node's identity is loaded; None unbinds)."""
    _stamp.node_id = node_id
