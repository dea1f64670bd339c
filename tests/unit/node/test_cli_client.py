"""CLI client commands against a scripted API server: what they send (token, query), what they print
(full ids), their exit codes, and that no bad input ends in a traceback."""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node.accounts import AccountStore
from node.cli.main import _extensions, cli
from node.cookie import write_cookie
from tests.harness import closed_port
from tests.scripted_api import ScriptedApi

for _register in _extensions():
    _register(cli)

ORDER_ID = "0f" * 15 + "00"
ACCOUNT = "ab" * 32
NODE_ID = "c0ffee" + "0" * 34


@pytest.fixture
def api():
    server = ScriptedApi()
    yield server
    server.close()


def run(args: list[str], env: dict[str, str] | None = None):
    """Invoke the CLI in-process with a clean environment; never lets an exception pass unnoticed."""
    clean = {k: "" for k in os.environ if k.startswith("EXCHANGE_NODE") or k in ("DATA_DIR", "API_HOST", "API_PORT")}
    result = CliRunner().invoke(cli, args, env={**clean, **(env or {})}, prog_name="exchange-node")
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{args}: uncaught {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    return result


def order(status: str = "open", reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": ORDER_ID, "status": status, "reason": reason, "market": "BTC-USD", "side": "buy", "type": "limit",
            "price": "100.25", "qty": "1.0000", "remaining": "1.0000", "final": True, "account": ACCOUNT, **extra}


def test_the_cookie_of_data_dir_is_sent_to_the_node(api, tmp_path):
    cookie = write_cookie(tmp_path)
    api.answers[("GET", "/peers")] = (200, {"peers": []})
    result = run(["peers"], env={"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url})
    assert result.exit_code == 0 and "no peers yet" in result.output
    assert api.requests[-1]["auth"] == f"Bearer {cookie}"
    run(["peers", "--token", "tok-123"], env={"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url})
    assert api.requests[-1]["auth"] == "Bearer tok-123"


def test_unauthorized_says_where_the_token_comes_from(api, tmp_path):
    api.answers[("GET", "/peers")] = (401, {"error": {"code": "unauthorized", "message": "needs a token"}})
    result = run(["peers", "--api", api.url, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "unauthorized: needs a token" in result.stderr and "no cookie at" in result.stderr
    assert "--data-dir" in result.stderr and "EXCHANGE_NODE_TOKEN" in result.stderr


def test_tables_show_full_ids(api, tmp_path):
    api.answers[("GET", "/peers")] = (200, {"peers": [{"node_id": NODE_ID, "host": "127.0.0.1", "port": 1,
                                                       "status": "connected", "direction": "out", "source": "pex",
                                                       "rtt_ms": 0.5, "last_seen": None}]})
    trade = {"id": "7" * 40, "price": "100", "qty": "1", "buy_order_id": ORDER_ID, "sell_order_id": "e" * 32}
    api.answers[("GET", "/trades/BTC-USD")] = (200, {"trades": [trade], "trade_log_hash": "d" * 64})
    api.answers[("GET", "/orders")] = (200, {"orders": [order()]})
    env = {"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url}
    assert NODE_ID in run(["peers"], env=env).output
    shown = run(["trades", "BTC-USD"], env=env).output
    assert all(i in shown for i in ("7" * 40, ORDER_ID, "e" * 32))
    listed = run(["orders"], env=env).output
    assert ORDER_ID in listed and ACCOUNT in listed


def test_orders_filters_by_a_local_account_name_or_an_id(api, tmp_path):
    alice = AccountStore(tmp_path).new("alice")
    api.answers[("GET", "/orders")] = (200, {"orders": []})
    env = {"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url}
    assert "no open or pending orders" in run(["orders", "--account", "alice", "--open"], env=env).output
    assert [r["query"] for r in api.requests[-2:]] == [f"account={alice.id}&status=pending",
                                                       f"account={alice.id}&status=open"]
    run(["orders", "--account", ACCOUNT], env=env)
    assert api.requests[-1]["query"] == f"account={ACCOUNT}"
    run(["orders"], env=env)
    assert api.requests[-1]["query"] == ""


def test_a_rejected_order_exits_1_with_the_reason(api, tmp_path):
    api.answers[("POST", "/orders")] = (201, {"order": order("rejected", "post_only_would_cross"), "trades": []})
    env = {"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url}
    result = run(["order", "buy", "BTC-USD", "1", "--price", "100.25", "--type", "post_only"], env=env)
    assert result.exit_code == 1 and "order rejected: post_only_would_cross" in result.stderr
    assert ORDER_ID in result.stdout
    as_json = run(["order", "buy", "BTC-USD", "1", "--price", "100.25", "--json"], env=env)
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["order"]["status"] == "rejected"
    assert json.loads(api.requests[-1]["body"]) == {"market": "BTC-USD", "side": "buy", "type": "limit", "qty": "1",
                                                    "price": "100.25"}
    api.answers[("POST", "/orders")] = (201, {"order": order("open"), "trades": []})
    assert run(["order", "buy", "BTC-USD", "1", "--price", "100.25"], env=env).exit_code == 0


def test_a_rejected_cancel_exits_1_with_the_reason(api, tmp_path):
    env = {"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url}
    api.answers[("DELETE", f"/orders/{ORDER_ID}")] = (200, {"order": order(), "cancel": {"status": "rejected",
                                                                                          "reason": "not_owner"}})
    result = run(["cancel", ORDER_ID, "--account", "alice"], env=env)
    assert result.exit_code == 1 and "cancel rejected: not_owner" in result.stderr
    api.answers[("DELETE", f"/orders/{ORDER_ID}")] = (200, {"order": order("cancelled"), "cancel": {"status": "done"}})
    result = run(["cancel", ORDER_ID], env=env)
    assert result.exit_code == 0 and "cancel done" in result.output
    api.answers[("DELETE", f"/orders/{ORDER_ID}")] = (422, {"error": {"code": "bad_signature", "message": "no",
                                                                      "field": "sig"}})
    result = run(["cancel", ORDER_ID], env=env)
    assert result.exit_code == 1 and "bad_signature: no (field sig)" in result.stderr


def test_account_show_with_positions_and_open_orders(api, tmp_path):
    alice = AccountStore(tmp_path).new("alice")
    api.answers[("GET", f"/accounts/{alice.id}")] = (200, {"id": alice.id, "positions": {"BTC": "1.5",
                                                                                          "USD": "-150.25"}})
    api.answers[("GET", "/orders")] = (200, {"orders": [order(account=alice.id)]})
    result = run(["account", "show", "alice"], env={"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url})
    assert result.exit_code == 0, result.output
    assert alice.id in result.stdout and "-150.25" in result.stdout and ORDER_ID in result.stdout
    assert api.requests[-1]["query"] == f"account={alice.id}&status=open"
    as_json = json.loads(run(["account", "show", "alice", "--json"],
                             env={"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url}).stdout)
    assert as_json["id"] == alice.id and as_json["open_orders"][0]["id"] == ORDER_ID


def test_account_show_without_the_endpoints_or_without_a_node(api, tmp_path):
    default = AccountStore(tmp_path).ensure_default()
    result = run(["account", "show"], env={"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url})
    assert result.exit_code == 0 and default.id in result.stdout
    assert "does not serve GET /accounts/{id} (HTTP 404)" in result.stderr
    result = run(["account", "show", default.id, "--api", f"127.0.0.1:{closed_port()}"],
                 env={"DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0 and "default" in result.stdout and "connection refused" in result.stderr
    other = run(["account", "show", ACCOUNT, "--api", api.url], env={"DATA_DIR": str(tmp_path)})
    assert other.exit_code == 0 and "not held in this DATA_DIR" in other.stdout


def test_account_new_and_list_work_without_a_node(tmp_path):
    env = {"DATA_DIR": str(tmp_path)}
    assert "no accounts" in run(["account", "list"], env=env).output
    made = json.loads(run(["account", "new", "bob", "--json"], env=env).stdout)
    unnamed = run(["account", "new"], env=env)
    assert unnamed.exit_code == 0 and "created account account-1" in unnamed.output
    listed = run(["account", "list"], env=env).output
    assert made["id"] in listed and "bob" in listed and "account-1" in listed
    assert json.loads(run(["account", "list", "--json"], env=env).stdout)["accounts"][1] == made


class GarbageServer:
    """Answers a request with bytes that are not HTTP (as a P2P port would), then closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"\x00\x00\x00\x05\x81\xa4type")
            conn.shutdown(socket.SHUT_WR)
            conn.recv(65536)
            conn.close()


def bad_inputs(tmp_path: Path, api: ScriptedApi) -> list[tuple[list[str], dict[str, str], int, str]]:
    loose = tmp_path / "loose"
    AccountStore(loose).new("x")
    os.chmod(loose / "accounts", 0o755)
    AccountStore(tmp_path / "has-bob").new("bob")
    api.answers[("GET", "/text")] = (200, b"<html>hello</html>")
    garbage = GarbageServer()
    closed = closed_port()
    return [
        (["status", "--api", "notaurl"], {}, 2, "invalid --api 'notaurl': expected http://HOST:PORT or HOST:PORT"),
        (["status", "--api", "127.0.0.1:99999"], {}, 2, "invalid --api '127.0.0.1:99999'"),
        (["status", "--api", "ftp://127.0.0.1:1"], {}, 2, "invalid --api"),
        (["status", "--api", f"127.0.0.1:{closed}"], {}, 1,
         f"connection refused at 127.0.0.1:{closed} (address from --api)"),
        (["status"], {"EXCHANGE_NODE_API": "nope"}, 2, "invalid EXCHANGE_NODE_API 'nope'"),
        (["status"], {"API_PORT": "abc", "DATA_DIR": str(tmp_path / "empty")}, 2, "invalid API_PORT='abc'"),
        (["status", "--token", "two words", "--api", api.url], {}, 2, "invalid --token"),
        (["status", "--api", f"127.0.0.1:{garbage.port}"], {}, 1, "not HTTP"),
        (["status", "--api", f"{api.url}/text"], {}, 2, "give only the scheme, host and port"),
        (["book", "BTC-USD", "--api", api.url, "--depth", "abc"], {}, 2, "Invalid value for '--depth'"),
        (["order", "buy", "BTC-USD", "1", "--wait", "nan", "--api", api.url], {}, 2, "not between 0 and 3600"),
        (["order", "buy", "BTC-USD", "1", "--wait", "-1", "--api", api.url], {}, 2, "not between 0 and 3600"),
        (["order", "hold", "BTC-USD", "1", "--api", api.url], {}, 2, "'hold' is not buy or sell"),
        (["order", "buy", "BTC-USD", "1", "--type", "stop", "--api", api.url], {}, 2, "Invalid value for '--type'"),
        (["cancel", ORDER_ID, "--wait", "inf", "--api", api.url], {}, 2, "not between 0 and 3600"),
        (["rpc", "ping", "{not json", "--api", api.url], {}, 2, "not JSON"),
        (["rpc", "ping", "--timeout", "nan", "--api", api.url], {}, 2, "not between 0 and 3600"),
        (["account", "new", "bad/name"], {"DATA_DIR": str(tmp_path / "d")}, 2, "invalid account name 'bad/name'"),
        (["account", "new", "bob"], {"DATA_DIR": str(tmp_path / "has-bob")}, 1, "account 'bob' already exists"),
        (["account", "show", "nosuch", "--api", api.url], {"DATA_DIR": str(tmp_path / "d")}, 1, "no account 'nosuch'"),
        (["account", "list"], {"DATA_DIR": str(loose)}, 1, f"chmod 700 {loose / 'accounts'}"),
        (["account", "new", "y"], {"DATA_DIR": str(loose)}, 1, f"chmod 700 {loose / 'accounts'}"),
        (["status", "--api", api.url], {}, 1, "does not serve GET /status (HTTP 404)"),
        (["orders", "--api", api.url], {}, 1, "does not serve GET /orders (HTTP 404)"),
    ]


def test_no_bad_input_prints_a_traceback(api, tmp_path):
    for args, env, code, needle in bad_inputs(tmp_path, api):
        result = run(args, env)
        assert result.exit_code == code, (args, result.exit_code, result.output)
        assert needle in result.stderr, (args, result.output)
        assert len(result.stderr.strip().splitlines()) <= 4, (args, result.stderr)  # a message (or usage), not a dump


def test_an_answer_that_is_not_an_exchange_node_api(api):
    api.answers[("GET", "/status")] = (200, {"no": "node_id"})
    result = run(["status", "--api", api.url])
    assert result.exit_code == 1 and "has no 'node_id' field: is it an exchange-node control API?" in result.stderr
    api.answers[("GET", "/status")] = (200, b"<html>not json</html>")
    result = run(["status", "--api", api.url])
    assert result.exit_code == 1 and "not JSON" in result.stderr
