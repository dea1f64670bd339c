"""JSON and text log lines carry the structured fields call sites give, and only documented ones exist."""
from __future__ import annotations

import ast
import io
import json
import logging
from pathlib import Path

import pytest

from node import logs

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("config", "p2p", "exchange", "node", "bench")


@pytest.fixture
def capture():
    """The root logger configured as the node does it, writing into a buffer."""
    def configure(fmt: str) -> io.StringIO:
        logs.configure_logging("DEBUG", fmt)
        buffer = io.StringIO()
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        return buffer

    saved = logging.getLogger().handlers[:], logging.getLogger().level
    logs.bind_node(None)          # another test's node may still be bound in this process
    yield configure
    logs.bind_node(None)
    logging.getLogger().handlers[:], level = saved
    logging.getLogger().setLevel(level)


def test_json_lines_carry_node_and_the_fields_given(capture):
    out = capture("json")
    log = logging.getLogger("p2p.test")
    log.warning("before the identity is loaded")
    logs.bind_node("ab" * 20)
    log.warning("dial %s failed", "x", extra={"peer": "cd" * 20, "address": "10.0.0.7:7946",
                                               "reason": "refused"})
    log.info("plain line")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["node"] is None and "peer" not in first
    assert second == {"ts": second["ts"], "level": "WARNING", "logger": "p2p.test", "msg": "dial x failed",
                      "node": "ab" * 20, "peer": "cd" * 20, "address": "10.0.0.7:7946", "reason": "refused"}
    assert third["node"] == "ab" * 20 and set(third) == {"ts", "level", "logger", "msg", "node"}


def test_text_lines_append_the_fields_as_key_value(capture):
    out = capture("text")
    logs.bind_node("ab" * 20)
    log = logging.getLogger("exchange.test")
    log.info("order refused", extra={"order": "o-1", "market": "BTC-USD", "reason": "unknown_market"})
    log.info("no fields")
    with_fields, without = out.getvalue().splitlines()
    assert with_fields.endswith("exchange.test: order refused [order=o-1 market=BTC-USD reason=unknown_market]")
    assert without.endswith("exchange.test: no fields")


def test_exception_text_still_follows_the_fields(capture):
    out = capture("json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed", extra={"reason": "bug"})
    entry = json.loads(out.getvalue())
    assert entry["reason"] == "bug" and "ValueError: boom" in entry["exc"]


def _extra_keys(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                    yield node.lineno, [k.value if isinstance(k, ast.Constant) else None for k in keyword.value.keys]


def test_every_extra_in_the_code_uses_documented_field_names():
    used, wrong = 0, []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for line, keys in _extra_keys(ast.parse(path.read_text())):
                used += 1
                wrong += [f"{path.relative_to(ROOT)}:{line}: {key!r}" for key in keys
                          if key not in logs.FIELDS or key == "node"]
    assert used >= 5, "the scan found no call sites: is it reading the right files?"
    assert wrong == [], "log extra keys outside node.logs.FIELDS (or `node`, which is stamped):\n" + "\n".join(wrong)


def test_a_clients_malformed_requests_are_one_warning_a_period_without_traceback(capture, monkeypatch):
    """Red team: aiohttp logged each malformed request a client sent as an ERROR with a traceback, so any client
    could fill the node's log at will. They are one WARNING line a period, saying how many were left out; an error
    of ours keeps its level and traceback."""
    from aiohttp.http_exceptions import BadStatusLine

    now = [100.0]
    monkeypatch.setattr(logs._malformed_requests, "clock", lambda: now[0])
    monkeypatch.setattr(logs._malformed_requests, "_next", float("-inf"))
    buffer = capture("text")
    server = logging.getLogger("aiohttp.server")
    for _ in range(50):
        try:
            raise BadStatusLine("\x00garbage")
        except BadStatusLine:
            server.exception("Error handling request from %s", "198.51.100.7")
    now[0] += 11
    try:
        raise BadStatusLine("again")
    except BadStatusLine:
        server.exception("Error handling request from %s", "198.51.100.7")
    try:
        raise RuntimeError("a bug of ours")
    except RuntimeError:
        server.exception("Unhandled exception")
    lines = buffer.getvalue().splitlines()
    warnings = [line for line in lines if "malformed HTTP request" in line]
    assert len(warnings) == 2 and all(" WARNING " in line for line in warnings), lines
    assert "198.51.100.7" in warnings[0] and "49 more since the last such line" in warnings[1], warnings
    assert buffer.getvalue().count("Traceback") == 1, "only our own error's"
    assert any(" ERROR " in line and "Unhandled exception" in line for line in lines)
    assert "RuntimeError: a bug of ours" in buffer.getvalue(), "our own errors keep their traceback"
