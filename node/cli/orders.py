"""CLI commands for the exchange: `order` (place one, or show one by id), `cancel`, `cancel-all`, `cancel-after`,
`orders`, `fills`, `book`, `trades` (they call the control API). Times are printed as ISO-8601 in UTC (with the
local time and its offset on one-line answers); `--json` keeps the API's epoch milliseconds and adds ISO twins."""
from __future__ import annotations

import json
import time
from collections import deque
from typing import TextIO
from urllib.parse import quote, urlencode

import click

from exchange.app.txs import CancelOp, InvalidTx, NewOrderOp
from node.cli.accounts import complete_account
from node.cli.agents import load_key, signed_as_agent
from node.cli.main import SECONDS, api_option, emit_json, fail, json_option, pending_reason, print_table, request
from node.cli.client import JsonObject, iso_utc, when, with_iso
from node.locate import NodeTarget


def _order_line(order: JsonObject) -> str:
    price = f" @ {order['price']}" if order.get("price") else ""
    reason = f" ({pending_reason(order)})" if order.get("reason") else ""
    return (f"{order['id']}  {order['status']}{reason}  {order['side']} {order['type']} {order['qty']} "
            f"{order['market']}{price}  remaining {order['remaining']}")


TRADE_HEADERS = ["time (UTC)", "trade", "price", "qty", "taker", "buy order", "sell order"]


def _trade_rows(trades: list[JsonObject]) -> list[list[object]]:
    return [[_utc(t.get("time_ms")), t["id"], t["price"], t["qty"], t.get("taker_side", ""), t["buy_order_id"],
             t["sell_order_id"]] for t in trades]


def _utc(ms: object) -> str:
    return iso_utc(ms) if isinstance(ms, int) and not isinstance(ms, bool) else "-"


ORDER_TIMES = ("until", "expires")


def _order_json(order: JsonObject) -> JsonObject:
    return with_iso(order, *ORDER_TIMES)


def _account_id(api: NodeTarget, account: str) -> str:
    """A name of this DATA_DIR's accounts becomes its id; anything else goes to the node as given."""
    from node.accounts import AccountError, AccountStore

    try:
        return AccountStore(api.data_dir).get(account).id
    except (KeyError, AccountError):
        return account


def _exit_if_rejected(what: str, result: JsonObject) -> None:
    """A refused order or cancel is a failure for scripts: exit 1 with the reason on stderr."""
    if result.get("status") == "rejected":
        fail(f"{what} rejected: {result.get('reason') or 'no reason given'}")


NOT_FINAL_EXIT = 3


def _exit_if_not_final(what: str, data: JsonObject, wait: float) -> None:
    """Accepted but not final within --wait is not done for a script: exit 3 with the reason on stderr (the
    node keeps handing it on; `exchange-node orders` shows it as pending)."""
    if data.get("final") is False:
        reason = pending_reason(data if data.get("reason") else data.get("cancel") or {})
        fail(f"{what} not final within {wait:g} s ({reason}); it stays pending on the node", NOT_FINAL_EXIT)


def _cancel_as_agent(api: NodeTarget, key_file: str, order_id: str | None, client_id: str | None,
                     wait: float) -> JsonObject:
    """A cancel signed with an agent's key file, of an order found by id or by client id."""
    if order_id is None:
        _, account = load_key(key_file)
        query = urlencode({"client_id": client_id or "", "account": account.hex()})
        found = request(api, "GET", f"/orders?{query}", expect=("orders",))["orders"]
        if not found:
            fail(f"no open or recent order of account {account.hex()} holds client id {client_id}")
        order_id = found[0]["id"]
    order = request(api, "GET", f"/orders/{quote(order_id or '', safe='')}", expect=("order",))["order"]
    tx = signed_as_agent(api, key_file, [CancelOp.parse(order["market"], order["id"])])
    answer: JsonObject = request(api, "DELETE", f"/orders/{quote(order['id'], safe='')}?wait={wait}",
                                 {"signed": tx.as_json()}, timeout=wait + 10, expect=("cancel", "order"))
    return answer


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("side", metavar="SIDE|ID")
    @click.argument("market", required=False)
    @click.argument("qty", required=False)
    @click.option("--price", default=None, help="Limit price as a decimal (not for --type market).")
    @click.option("--type", "kind", default="limit", show_default=True,
                  type=click.Choice(["limit", "market", "ioc", "fok", "post_only", "stop_market", "stop_limit",
                                     "take_profit"]))
    @click.option("--trigger", default=None, metavar="PRICE",
                  help="Trigger price of a stop_market, stop_limit or take_profit order (the last trade price).")
    @click.option("--reduce-only", is_flag=True, help="Only reduce the account's position (never rests).")
    @click.option("--account", default=None, shell_complete=complete_account,
                  help="Account that signs the order: a name in DATA_DIR/accounts or an id [default: default].")
    @click.option("--stp", default=None,
                  type=click.Choice(["cancel_newest", "cancel_oldest", "cancel_both", "decrement_and_cancel"]))
    @click.option("--until", "good_for", type=SECONDS, default=None, metavar="SECONDS",
                  help="Good-til-time: the chain cancels what rests of it this many seconds from now.")
    @click.option("--client-id", default=None, metavar="ID",
                  help="Your own id for the order (1-36 of A-Z a-z 0-9 _ -), unique among the account's open and "
                       "recent orders: `orders --client-id ID` finds it and `cancel --client-id ID` cancels it.")
    @click.option("--key", "key_file", default=None, metavar="FILE", type=click.Path(exists=True, dir_okay=False),
                  help="Sign as an agent with this key file (`agent add --out FILE`), for the account it trades for.")
    @click.option("--wait", type=SECONDS, default=2.0, show_default=True,
                  help="Seconds to wait for the order to be final.")
    @api_option
    @json_option
    def order(side: str, market: str | None, qty: str | None, price: str | None, kind: str, trigger: str | None,
              reduce_only: bool, account: str | None,
              stp: str | None, good_for: float | None, client_id: str | None, key_file: str | None, wait: float,
              api: NodeTarget, as_json: bool) -> None:
        """Place an order, e.g. `order buy BTC-USD 1.5 --price 100.25`. Exits 1 if it is rejected, 3 if it is not
        final within --wait (with the reason: no_quorum, not_final_yet). `order ID` shows one order's full status."""
        if side not in ("buy", "sell"):
            if market is not None or qty is not None:
                raise click.BadParameter(f"{side!r} is not buy or sell (SIDE MARKET QTY places an order; "
                                         f"a lone ID shows one)", param_hint="SIDE")
            return _show_order(api, side, as_json)
        if market is None or qty is None:
            raise click.UsageError(f"`order {side}` needs MARKET and QTY, e.g. `order {side} BTC-USD 0.5 --price 100.25`")
        body: dict[str, object] = {"market": market, "side": side, "type": kind, "qty": qty}
        until = None if good_for is None else int((time.time() + good_for) * 1000)
        for name, value in (("price", price), ("account", account), ("stp", stp), ("until", until),
                            ("client_id", client_id), ("trigger_price", trigger), ("reduce_only", reduce_only or None)):
            if value is not None:
                body[name] = value
        if key_file is not None:
            if account is not None:
                raise click.UsageError("--key signs for the account in the key file: drop --account")
            try:
                op = NewOrderOp.parse(market, side, kind, price, qty, stp, until, client_id, trigger,
                                      True if reduce_only else None)
            except InvalidTx as exc:
                fail(f"{exc.field or 'order'}: {exc}")
            body = {"signed": signed_as_agent(api, key_file, [op]).as_json()}
        data = request(api, "POST", f"/orders?wait={wait}", body, timeout=wait + 10, expect=("order",))
        order_data = data["order"]
        if as_json:
            emit_json({**data, "order": _order_json(order_data),
                       "trades": [with_iso(t, "time_ms") for t in data.get("trades") or []]})
        else:
            final = "final" if data.get("final") else f"NOT FINAL ({pending_reason(data)})"
            click.echo(f"{_order_line(order_data)}  [{final}]")
            if data.get("trades"):
                print_table(TRADE_HEADERS, _trade_rows(data["trades"]))
        _exit_if_rejected("order", order_data)
        _exit_if_not_final("order", data, wait)

    @cli.command()
    @click.argument("order_id", required=False)
    @click.option("--client-id", default=None, metavar="ID", help="Cancel the account's order holding this client id.")
    @click.option("--account", default=None, shell_complete=complete_account,
                  help="Account that signs the cancel (it must own the order) [default: default].")
    @click.option("--key", "key_file", default=None, metavar="FILE", type=click.Path(exists=True, dir_okay=False),
                  help="Sign as an agent with this key file, for the account it trades for.")
    @click.option("--wait", type=SECONDS, default=2.0, show_default=True,
                  help="Seconds to wait for the cancel to be final.")
    @api_option
    @json_option
    def cancel(order_id: str | None, client_id: str | None, account: str | None, key_file: str | None, wait: float,
               api: NodeTarget, as_json: bool) -> None:
        """Cancel an open order by id, or by the client id it was placed with (`--client-id ID`)."""
        if (order_id is None) == (client_id is None):
            raise click.UsageError("give an ORDER_ID or --client-id ID (one of the two)")
        if key_file is not None:
            data = _cancel_as_agent(api, key_file, order_id, client_id, wait)
        elif client_id is not None:
            who = _account_id(api, account or "default")
            query = urlencode({"client_id": client_id, "wait": wait, "account": who})
            data = request(api, "DELETE", f"/orders?{query}", timeout=wait + 10, expect=("cancel", "order"))
        else:
            query = urlencode({"wait": wait, **({"account": account} if account else {})})
            data = request(api, "DELETE", f"/orders/{quote(order_id or '', safe='')}?{query}", timeout=wait + 10,
                           expect=("cancel", "order"))
        result = data["cancel"]
        if as_json:
            emit_json(data)
        else:
            reason = f" ({result['reason']})" if result.get("reason") else ""
            click.echo(f"cancel {result['status']}{reason}")
            click.echo(_order_line(data["order"]))
        _exit_if_rejected("cancel", result)
        _exit_if_not_final("cancel", data, wait)

    @cli.command("batch")
    @click.argument("file", type=click.File("r"))
    @click.option("--account", default=None, shell_complete=complete_account,
                  help="Account that signs the batch [default: default].")
    @click.option("--wait", type=SECONDS, default=2.0, show_default=True,
                  help="Seconds to wait for the batch to be final.")
    @api_option
    @json_option
    def batch(file: TextIO, account: str | None, wait: float, api: NodeTarget, as_json: bool) -> None:
        """Run a JSON list of operations (FILE, or - for stdin) all or none: new orders as `order` takes them
        (`{"market", "side", "type", "price", "qty", ...}`), `{"op": "cancel", "market", "order_id"}` and
        `{"op": "replace", "market", "order_id", "price", "qty"}`. Exits 1 if the batch is refused."""
        try:
            ops = json.load(file)
        except ValueError as exc:
            fail(f"{getattr(file, 'name', 'the batch')} is not JSON: {exc}")
        body = {"atomic": True, "orders": ops, **({"account": account} if account else {})}
        data = request(api, "POST", f"/orders/batch?wait={wait}", body, timeout=wait + 10, expect=("results",))
        results = data["results"]
        if as_json:
            emit_json(data)
        refused = next((r["error"] for r in results if "error" in r), None)
        marker = (results[0].get("result") or {}) if results else {}
        if refused is not None or marker.get("outcome") == "rejected":
            fail(f"batch refused: {refused['code'] if refused else marker.get('reason')}")
        if not as_json:
            for item in results[1:]:
                order = item.get("order")
                click.echo(_order_line(order) if order else f"{item['op']['op']} {item['op'].get('order_id', '')}: "
                           f"{(item.get('result') or {}).get('outcome', 'pending')}")
        if results and not results[0].get("final"):
            fail(f"batch not final within {wait:g} s; it stays pending on the node", NOT_FINAL_EXIT)

    @cli.command("cancel-all")
    @click.option("--market", default=None, help="Only this market's orders [default: every market].")
    @click.option("--side", default=None, type=click.Choice(["buy", "sell"]), help="Only this side [default: both].")
    @click.option("--account", default=None, shell_complete=complete_account,
                  help="Account whose orders are cancelled (it signs) [default: default].")
    @click.option("--wait", type=SECONDS, default=2.0, show_default=True,
                  help="Seconds to wait for the cancel-all to be final.")
    @api_option
    @json_option
    def cancel_all(market: str | None, side: str | None, account: str | None, wait: float, api: NodeTarget,
                   as_json: bool) -> None:
        """Cancel every open order of an account in one signed operation. Exits 3 if not final within --wait."""
        body = {name: value for name, value in (("market", market), ("side", side), ("account", account)) if value}
        data = request(api, "POST", f"/orders/cancel-all?wait={wait}", body, timeout=wait + 10, expect=("cancel_all",))
        result = data["cancel_all"]
        if as_json:
            emit_json(data)
        else:
            scope = f"{result.get('market') or 'every market'}, {result.get('side') or 'both sides'}"
            done = f"{result.get('cancelled', 0)} cancelled" if result["status"] == "done" else result["status"]
            click.echo(f"cancel-all ({scope}): {done}" + (f" ({result['reason']})" if result.get("reason") else ""))
            if data.get("pending_not_covered"):
                click.echo(f"not covered (pending on this node, no block holds them yet): "
                           f"{', '.join(data['pending_not_covered'])}")
        _exit_if_rejected("cancel-all", result)
        _exit_if_not_final("cancel-all", data, wait)

    @cli.command("cancel-after")
    @click.argument("after", type=SECONDS, required=False, metavar="SECONDS")
    @click.option("--clear", is_flag=True, help="Disarm the switch.")
    @click.option("--account", default=None, shell_complete=complete_account,
                  help="Account whose orders the switch cancels (it signs) [default: default].")
    @click.option("--wait", type=SECONDS, default=2.0, show_default=True,
                  help="Seconds to wait for the switch to be final.")
    @api_option
    @json_option
    def cancel_after(after: float | None, clear: bool, account: str | None, wait: float, api: NodeTarget,
                        as_json: bool) -> None:
        """The dead-man's switch: cancel all of an account's orders SECONDS from now unless run again first
        (`cancel-after 30` every 10 s keeps it from firing; `--clear` disarms it). The validators fire it
        from block time, so it fires even when this node is gone."""
        if (after is None) == (not clear):
            fail("give SECONDS or --clear (not both)")
        body: dict[str, object] = {"at": None} if clear else {"after": after}
        if account:
            body["account"] = account
        data = request(api, "POST", f"/orders/cancel-after?wait={wait}", body, timeout=wait + 10,
                       expect=("schedule_cancel",))
        result = data["schedule_cancel"]
        if as_json:
            emit_json({**data, "schedule_cancel": with_iso(result, "at")})
        elif result["status"] == "armed":
            click.echo(f"switch armed: all orders of {result['account'][:12]}… are cancelled at block time "
                       f"{when(result['at'])} unless refreshed")
        else:
            click.echo(f"switch {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))
        _exit_if_rejected("cancel-after", result)
        _exit_if_not_final("cancel-after", data, wait)

    @cli.command("orders")
    @click.option("--account", default=None, shell_complete=complete_account,
                  help="Only this account's orders: a name in DATA_DIR/accounts or an id.")
    @click.option("--open", "only_open", is_flag=True,
                  help="Only orders still open, and this node's pending ones (no block holds them yet).")
    @click.option("--client-id", default=None, metavar="ID", help="Only the order holding this client id.")
    @api_option
    @json_option
    def orders_command(account: str | None, only_open: bool, client_id: str | None, api: NodeTarget,
                       as_json: bool) -> None:
        """List orders (full ids, so they can be copied into `cancel`); pending ones first, marked `pending`."""
        query = {"account": _account_id(api, account)} if account else {}
        if client_id is not None:
            data = request(api, "GET", "/orders?" + urlencode({**query, "client_id": client_id}), expect=("orders",))
        elif only_open:     # the open ones and, first, those no block holds yet: both can still trade
            pending = request(api, "GET", "/orders?" + urlencode({**query, "status": "pending"}), expect=("orders",))
            data = request(api, "GET", "/orders?" + urlencode({**query, "status": "open"}), expect=("orders",))
            data = {**data, "orders": pending["orders"] + data["orders"]}
        else:
            data = request(api, "GET", "/orders" + (f"?{urlencode(query)}" if query else ""), expect=("orders",))
        if as_json:
            return emit_json({**data, "orders": [_order_json(o) for o in data["orders"]]})
        if not data["orders"]:
            click.echo("no open or pending orders" if only_open else "no orders")
            return
        print_table(["order", "account", "market", "side", "type", "price", "qty", "remaining", "status", "reason"],
                    [[o["id"], o.get("account", ""), o["market"], o["side"], o["type"], o.get("price") or "-",
                      o["qty"], o["remaining"], o["status"], pending_reason(o) if o.get("reason") else ""]
                     for o in data["orders"]])

    @cli.command()
    @click.argument("market")
    @click.option("--depth", default=10, show_default=True, help="Price levels per side.")
    @api_option
    @json_option
    def book(market: str, depth: int, api: NodeTarget, as_json: bool) -> None:
        """Show a market's order book: final (every block in it has a quorum certificate)."""
        data = request(api, "GET", f"/book/{quote(market, safe='')}?depth={depth}", expect=("market", "bids", "asks"))
        if as_json:
            return emit_json(data)
        click.echo(f"{data['market']}  final at height {data.get('height')} (epoch {data.get('epoch')})  "
                   f"digest {data['digest']}")
        bids, asks = data["bids"], data["asks"]
        rows = [[*(bids[i] if i < len(bids) else ["", ""]), *(asks[i] if i < len(asks) else ["", ""])]
                for i in range(max(len(bids), len(asks)))]
        if not rows:
            click.echo("(empty book)")
            return
        print_table(["bid price", "bid qty", "ask price", "ask qty"], rows)

    @cli.command()
    @click.argument("market")
    @click.option("--limit", default=20, show_default=True, help="Most recent trades to show.")
    @api_option
    @json_option
    def trades(market: str, limit: int, api: NodeTarget, as_json: bool) -> None:
        """Show a market's most recent final trades, oldest first."""
        data = request(api, "GET", f"/trades/{quote(market, safe='')}?limit={limit}", expect=("trades",))
        if as_json:
            return emit_json({**data, "trades": [with_iso(t, "time_ms") for t in data["trades"]]})
        if not data["trades"]:
            click.echo("no trades yet")
            return
        print_table(TRADE_HEADERS, _trade_rows(data["trades"]))
        click.echo(f"{len(data['trades'])} trades shown, final at height {data.get('height')}")

    @cli.command()
    @click.option("--account", default=None, shell_complete=complete_account,
                  help="Whose fills: a name in DATA_DIR/accounts or an id [default: default].")
    @click.option("--market", default=None, help="Only this market [default: every market the node trades].")
    @click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True,
                  help="Most recent fills to show.")
    @api_option
    @json_option
    def fills(account: str | None, market: str | None, limit: int, api: NodeTarget, as_json: bool) -> None:
        """Show an account's fills (its trades), newest first: time, side, price, qty, maker or taker, order."""
        account_id = _account_id(api, account or "default")
        markets = [market] if market else request(api, "GET", "/status", expect=("markets",))["markets"]
        found: list[tuple[tuple[int, int, int], JsonObject]] = []
        for name in markets:
            found += _fills_of(api, account_id, name, limit)
        found.sort(key=lambda item: item[0], reverse=True)
        rows = [_fill_view(trade) for _, trade in found[:limit]]
        if as_json:
            return emit_json({"account": rows[0]["account"] if rows else account_id, "fills": rows})
        if not rows:
            click.echo(f"no fills for {account or 'default'} in {', '.join(markets)}")
            return
        print_table(["time (UTC)", "market", "side", "price", "qty", "role", "order", "trade"],
                    [[_utc(f.get("time_ms")), f["market"], f["side"], f["price"], f["qty"], f["role"], f["order_id"],
                      f["id"]] for f in rows])


def _fills_of(api: NodeTarget, account: str, market: str,
              limit: int) -> list[tuple[tuple[int, int, int], JsonObject]]:
    """The account's `limit` newest kept trades in `market`, each with its sort key (height, time, place in the
    log): the API pages them oldest first, so every page is read and the last `limit` kept."""
    kept: deque[tuple[tuple[int, int, int], JsonObject]] = deque(maxlen=limit)
    cursor, seen = None, 0
    while True:
        query = {"market": market, "from": 0, "limit": 10_000, **({"cursor": cursor} if cursor else {})}
        page = request(api, "GET", f"/accounts/{quote(account, safe='')}/fills?{urlencode(query)}",
                       expect=("trades",))
        for trade in page["trades"]:
            kept.append(((int(trade.get("height") or 0), int(trade.get("time_ms") or 0), seen),
                         {**trade, "account": page.get("account", account)}))
            seen += 1
        cursor = page.get("next_cursor")
        if not cursor:
            return list(kept)


def _fill_view(trade: JsonObject) -> JsonObject:
    """A trade as the account saw it: its side, maker or taker, its own order."""
    mine = trade["account"]
    side = "buy" if trade.get("buyer") == mine else "sell"
    role = "taker" if trade.get("taker_account") == mine else "maker"
    return {**with_iso(trade, "time_ms"), "side": side, "role": role,
            "order_id": trade["buy_order_id"] if side == "buy" else trade["sell_order_id"]}


def _show_order(api: NodeTarget, order_id: str, as_json: bool) -> None:
    """`order ID`: one order's full status, final or pending here, and its trades among the market's recent."""
    data = request(api, "GET", f"/orders/{quote(order_id, safe='')}", expect=("order",))
    order = data["order"]
    trades = []
    if order.get("market") and str(order.get("filled") or "0").strip("0.") != "":
        recent = request(api, "GET", f"/trades/{quote(order['market'], safe='')}?limit=10000", expect=("trades",))
        trades = [t for t in recent["trades"] if order_id in (t.get("buy_order_id"), t.get("sell_order_id"))]
    if as_json:
        return emit_json({**data, "order": _order_json(order), "trades": [with_iso(t, "time_ms") for t in trades]})
    final = "final" if data.get("final") else f"NOT FINAL ({pending_reason(data)})"
    lines = [("order", order["id"]), ("status", f"{order['status']}"
                                      + (f" ({order['reason']})" if order.get("reason") else "") + f"  [{final}]"),
             ("account", order.get("account", "")),
             ("market", f"{order['market']}  {order['side']} {order['type']}"),
             ("price", order.get("price") or "- (market order)"),
             ("qty", order["qty"]), ("filled", order.get("filled", "")), ("remaining", order["remaining"])]
    if order.get("stp"):
        lines.append(("stp", order["stp"]))
    for name in ORDER_TIMES:
        if isinstance(order.get(name), int):
            lines.append((name, when(order[name])))
    if order.get("height") is not None:
        lines.append(("height", f"{order['height']} (the block that placed it)"))
    if order.get("tx_id"):
        lines.append(("tx", order["tx_id"]))
    if "cancel" in order:
        lines.append(("cancel", f"pending ({order['cancel'].get('tx_id')})"))
    for name, value in lines:
        click.echo(f"{name:<10}{value}")
    if trades:
        click.echo("")
        print_table(TRADE_HEADERS, _trade_rows(trades))
