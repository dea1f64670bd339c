"""The CLI for people, against a scripted API: times as ISO-8601 (UTC; the local offset on one-line
answers) wherever a time is printed, `--json` keeping the epoch milliseconds beside ISO twins; `fills` newest
first; `order ID`; `orders --open` listing pending orders with the open ones."""
from __future__ import annotations

import json

import pytest

from node.cli.client import iso_local, iso_utc, when
from tests.scripted_api import ScriptedApi
from tests.unit.node.test_cli_client import ACCOUNT, ORDER_ID, order, run

T1 = 1_795_960_037_052                  # 2026-11-29T13:47:17.052Z
T1_ISO = "2026-11-29T13:47:17.052Z"
OTHER = "cd" * 32


@pytest.fixture
def api():
    server = ScriptedApi()
    yield server
    server.close()


def env(api: ScriptedApi, tmp_path) -> dict[str, str]:
    return {"DATA_DIR": str(tmp_path), "EXCHANGE_NODE_API": api.url}


def trade(n: int, buyer: str, seller: str, taker: str, height: int, time_ms: int) -> dict:
    return {"id": f"t{n}", "market": "BTC-USD", "price": f"{100 + n}.00", "qty": "0.5000", "height": height,
            "time_ms": time_ms, "buyer": buyer, "seller": seller, "taker_account": taker,
            "taker_side": "buy" if taker == buyer else "sell", "buy_order_id": f"b{n}", "sell_order_id": f"s{n}"}


def test_iso_times_in_utc_and_the_local_offset():
    assert iso_utc(T1) == T1_ISO
    assert iso_local(T1)[-6] in "+-" and iso_local(T1)[-3] == ":"
    assert when(T1).startswith(T1_ISO)


def test_candles_history_and_trades_print_iso_times_not_epoch_ms(api, tmp_path):
    candle = {"t": T1 - 17_052, "open": "100.00", "high": "101.00", "low": "99.00", "close": "100.50",
              "volume": "1.0000", "quote_volume": "100.500000", "trades": 2}
    api.answers[("GET", "/candles/BTC-USD")] = (200, {"candles": [candle]})
    api.answers[("GET", "/trades/BTC-USD")] = (200, {"trades": [trade(1, ACCOUNT, OTHER, ACCOUNT, 3, T1)],
                                                     "next_cursor": None})
    shown = run(["candles", "BTC-USD"], env=env(api, tmp_path))
    assert shown.exit_code == 0 and "2026-11-29T13:47:00.000Z" in shown.output and str(candle["t"]) not in shown.output
    as_json = json.loads(run(["candles", "BTC-USD", "--json"], env=env(api, tmp_path)).output)
    assert as_json["candles"][0]["t"] == candle["t"] and as_json["candles"][0]["time"] == "2026-11-29T13:47:00.000Z"
    for args in (["history", "BTC-USD"], ["trades", "BTC-USD"]):
        shown = run(args, env=env(api, tmp_path))
        assert shown.exit_code == 0 and T1_ISO in shown.output and str(T1) not in shown.output, shown.output
        assert "time (UTC)" in shown.output
    listed = json.loads(run(["trades", "BTC-USD", "--json"], env=env(api, tmp_path)).output)["trades"][0]
    assert (listed["time_ms"], listed["time"]) == (T1, T1_ISO)
    exported = run(["history", "BTC-USD", "--csv"], env=env(api, tmp_path)).output.splitlines()
    assert exported[0].endswith(",time") and exported[1].startswith(f"{T1},") and exported[1].endswith(T1_ISO)
    run(["history", "BTC-USD", "--from", "2026-11-29T13:47:17.052Z", "--to", str(T1 + 1)], env=env(api, tmp_path))
    assert api.requests[-1]["query"].startswith(f"from={T1}&to={T1 + 1}&")


def test_cancel_after_says_when_in_iso_with_the_local_time(api, tmp_path):
    api.answers[("POST", "/orders/cancel-after")] = (200, {"schedule_cancel": {"status": "armed", "account": ACCOUNT,
                                                                               "at": T1}, "final": True})
    shown = run(["cancel-after", "30"], env=env(api, tmp_path))
    assert shown.exit_code == 0 and f"at block time {when(T1)} unless refreshed" in shown.output
    assert str(T1) not in shown.output
    as_json = json.loads(run(["cancel-after", "30", "--json"], env=env(api, tmp_path)).output)
    assert as_json["schedule_cancel"]["at"] == T1 and as_json["schedule_cancel"]["at_iso"] == T1_ISO


def test_fills_newest_first_across_pages_and_markets_with_side_and_role(api, tmp_path):
    api.answers[("GET", "/status")] = (200, {"markets": ["BTC-USD", "ETH-USD"]})
    path = f"/accounts/{ACCOUNT}/fills"
    first = [trade(1, ACCOUNT, OTHER, ACCOUNT, 3, T1), trade(2, OTHER, ACCOUNT, OTHER, 4, T1 + 1000)]
    api.answers[("GET", f"{path}?market=BTC-USD&from=0&limit=10000")] = (
        200, {"account": ACCOUNT, "trades": first, "next_cursor": "c1"})
    api.answers[("GET", f"{path}?market=BTC-USD&from=0&limit=10000&cursor=c1")] = (
        200, {"account": ACCOUNT, "trades": [trade(3, ACCOUNT, OTHER, OTHER, 6, T1 + 3000)], "next_cursor": None})
    eth = {**trade(4, OTHER, ACCOUNT, ACCOUNT, 5, T1 + 2000), "market": "ETH-USD"}
    api.answers[("GET", f"{path}?market=ETH-USD&from=0&limit=10000")] = (
        200, {"account": ACCOUNT, "trades": [eth], "next_cursor": None})
    shown = run(["fills", "--account", ACCOUNT], env=env(api, tmp_path))
    assert shown.exit_code == 0, shown.output
    rows = [line.split() for line in shown.output.splitlines()[2:]]
    assert [r[-1] for r in rows] == ["t3", "t4", "t2", "t1"]                    # newest first
    assert [(r[1], r[2], r[5], r[6]) for r in rows] == [("BTC-USD", "buy", "maker", "b3"), ("ETH-USD", "sell", "taker", "s4"),
                                                        ("BTC-USD", "sell", "maker", "s2"), ("BTC-USD", "buy", "taker", "b1")]
    assert rows[-1][0] == T1_ISO
    limited = json.loads(run(["fills", "--account", ACCOUNT, "--limit", "2", "--json"], env=env(api, tmp_path)).output)
    assert [f["id"] for f in limited["fills"]] == ["t3", "t4"]
    assert limited["fills"][0]["time_ms"] == T1 + 3000 and limited["fills"][0]["time"] == iso_utc(T1 + 3000)
    only = run(["fills", "--account", ACCOUNT, "--market", "ETH-USD"], env=env(api, tmp_path))
    assert "t4" in only.output and "t1" not in only.output
    api.answers[("GET", f"{path}?market=ETH-USD&from=0&limit=10000")] = (200, {"trades": [], "next_cursor": None})
    assert "no fills" in run(["fills", "--account", ACCOUNT, "--market", "ETH-USD"], env=env(api, tmp_path)).output


def test_order_id_shows_one_orders_full_status(api, tmp_path):
    api.answers[("GET", f"/orders/{ORDER_ID}")] = (200, {"order": order("partially_filled", filled="0.5000",
                                                                        remaining="0.5000", until=T1, height=7,
                                                                        stp="cancel_newest"), "final": True})
    api.answers[("GET", "/trades/BTC-USD")] = (200, {"trades": [{**trade(1, ACCOUNT, OTHER, OTHER, 8, T1),
                                                                 "buy_order_id": ORDER_ID}]})
    shown = run(["order", ORDER_ID], env=env(api, tmp_path))
    assert shown.exit_code == 0, shown.output
    lines = dict(line.split(None, 1) for line in shown.output.splitlines()[:11] if line.strip())
    assert lines["order"] == ORDER_ID and lines["status"] == "partially_filled  [final]"
    assert lines["filled"] == "0.5000" and lines["until"] == when(T1) and lines["height"].startswith("7")
    assert "t1" in shown.output and T1_ISO in shown.output
    as_json = json.loads(run(["order", ORDER_ID, "--json"], env=env(api, tmp_path)).output)
    assert as_json["order"]["until"] == T1 and as_json["order"]["until_iso"] == T1_ISO
    api.answers[("GET", f"/orders/{ORDER_ID}")] = (200, {"order": order("pending", "no_quorum", final=False),
                                                        "final": False, "reason": "no_quorum"})
    pending = run(["order", ORDER_ID], env=env(api, tmp_path))
    assert "pending (no_quorum)  [NOT FINAL (no_quorum)]" in pending.output
    api.answers[("GET", "/orders/nope")] = (404, {"error": {"code": "unknown_order", "message": "no such order",
                                                             "field": "id"}})
    missing = run(["order", "nope"], env=env(api, tmp_path))
    assert missing.exit_code == 1 and "unknown_order: no such order (field id)" in missing.stderr
    wrong = run(["order", "up", "BTC-USD", "1"], env=env(api, tmp_path))
    assert wrong.exit_code == 2 and "'up' is not buy or sell" in wrong.output
    short = run(["order", "buy", "BTC-USD"], env=env(api, tmp_path))
    assert short.exit_code == 2 and "needs MARKET and QTY" in short.output


def test_orders_open_lists_pending_orders_with_the_open_ones(api, tmp_path):
    pending_id = "1f" * 15 + "00"
    api.answers[("GET", "/orders?status=pending")] = (200, {"orders": [
        {**order("pending", "no_quorum"), "id": pending_id, "qty": "0.5000", "remaining": "0.5000"}]})
    api.answers[("GET", "/orders?status=open")] = (200, {"orders": [order("open")]})
    shown = run(["orders", "--open"], env=env(api, tmp_path))
    assert shown.exit_code == 0, shown.output
    rows = [line.split() for line in shown.output.splitlines()[2:]]
    assert [(r[0], r[8]) for r in rows] == [(pending_id, "pending"), (ORDER_ID, "open")]
    assert rows[0][-1] == "no_quorum"
    as_json = json.loads(run(["orders", "--open", "--json"], env=env(api, tmp_path)).output)
    assert [o["status"] for o in as_json["orders"]] == ["pending", "open"]


def test_a_dht_records_expiry_is_an_iso_time(api, tmp_path):
    record = {"node_id": "ab" * 16, "seq": 3, "protocol": 1, "expires_ms": T1, "services": [], "addresses": []}
    api.answers[("GET", f"/dht/nodes/{'ab' * 16}")] = (200, {"record": record, "found": True})
    shown = run(["dht", "lookup", "ab" * 16], env=env(api, tmp_path))
    assert f"expires {when(T1)}" in shown.output and str(T1) not in shown.output, shown.output


def test_account_show_says_when_the_switch_fires(api, tmp_path):
    from node.accounts import AccountStore

    alice = AccountStore(tmp_path).new("alice")
    api.answers[("GET", f"/accounts/{alice.id}")] = (200, {"positions": {}, "cancel_all_at": T1})
    api.answers[("GET", "/orders")] = (200, {"orders": []})
    shown = run(["account", "show", "alice"], env=env(api, tmp_path))
    assert f"cancelled at block time {when(T1)}" in shown.output and str(T1) not in shown.output, shown.output
    as_json = json.loads(run(["account", "show", "alice", "--json"], env=env(api, tmp_path)).output)
    assert as_json["account"]["cancel_all_at"] == T1 and as_json["account"]["cancel_all_at_iso"] == T1_ISO
