"""CLI commands for the exchange: `order`, `cancel`, `book`, `trades` (they call the control API)."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import click

from node.cli import api_option, emit_json, json_option, print_table, request


def _order_line(order: dict[str, Any]) -> str:
    price = f" @ {order['price']}" if order.get("price") else ""
    reason = f" ({order['reason']})" if order.get("reason") else ""
    return (f"{order['id']}  {order['status']}{reason}  {order['side']} {order['type']} {order['qty']} "
            f"{order['market']}{price}  remaining {order['remaining']}")


def _trade_rows(trades: list[dict[str, Any]]) -> list[list[Any]]:
    return [[t["id"][:24] + ("..." if len(t["id"]) > 24 else ""), t["price"], t["qty"], t.get("taker_side", ""),
             t["buy_order_id"][:20], t["sell_order_id"][:20]] for t in trades]


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("side", type=click.Choice(["buy", "sell"]))
    @click.argument("market")
    @click.argument("qty")
    @click.option("--price", default=None, help="Limit price as a decimal (not for --type market).")
    @click.option("--type", "kind", default="limit", show_default=True,
                  type=click.Choice(["limit", "market", "ioc", "fok", "post_only"]))
    @click.option("--account", default=None, help="Owner account (self-trade prevention applies per account).")
    @click.option("--stp", default=None,
                  type=click.Choice(["cancel_newest", "cancel_oldest", "cancel_both", "decrement_and_cancel"]))
    @click.option("--wait", default=2.0, show_default=True, help="Seconds to wait for the order to be final.")
    @api_option
    @json_option
    def order(side: str, market: str, qty: str, price: str | None, kind: str, account: str | None,
              stp: str | None, wait: float, api: str, as_json: bool) -> None:
        """Place an order, e.g. `order buy BTC-USD 1.5 --price 100.25`."""
        body: dict[str, Any] = {"market": market, "side": side, "type": kind, "qty": qty}
        for name, value in (("price", price), ("account", account), ("stp", stp)):
            if value is not None:
                body[name] = value
        data = request(api, "POST", f"/orders?wait={wait}", body, timeout=wait + 10)
        if as_json:
            return emit_json(data)
        order_data = data["order"]
        click.echo(_order_line(order_data) + ("" if order_data.get("final") else "  [not final yet]"))
        if data.get("trades"):
            print_table(["trade", "price", "qty", "taker", "buy order", "sell order"], _trade_rows(data["trades"]))

    @cli.command()
    @click.argument("order_id")
    @click.option("--account", default=None, help="Only cancel if the order belongs to this account.")
    @click.option("--wait", default=2.0, show_default=True, help="Seconds to wait for the cancel to be final.")
    @api_option
    @json_option
    def cancel(order_id: str, account: str | None, wait: float, api: str, as_json: bool) -> None:
        """Cancel an open order by id."""
        query = urlencode({"wait": wait, **({"account": account} if account else {})})
        data = request(api, "DELETE", f"/orders/{quote(order_id, safe='')}?{query}", timeout=wait + 10)
        if as_json:
            return emit_json(data)
        result = data["cancel"]
        reason = f" ({result['reason']})" if result.get("reason") else ""
        click.echo(f"cancel {result['status']}{reason}")
        click.echo(_order_line(data["order"]))

    @cli.command()
    @click.argument("market")
    @click.option("--depth", default=10, show_default=True, help="Price levels per side.")
    @click.option("--provisional", is_flag=True, help="Include events not final yet (may still change).")
    @api_option
    @json_option
    def book(market: str, depth: int, provisional: bool, api: str, as_json: bool) -> None:
        """Show a market's order book (final at the watermark unless --provisional)."""
        data = request(api, "GET", f"/book/{market}?depth={depth}" + ("&provisional=1" if provisional else ""))
        if as_json:
            return emit_json(data)
        label = "PROVISIONAL (not final)" if data.get("provisional") else "final"
        click.echo(f"{data['market']}  {label} at watermark {data['watermark']}  "
                   f"({data.get('final_events', 0)} final events, {data.get('pending_events', 0)} pending)  "
                   f"digest {data['digest'][:16]}")
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
    def trades(market: str, limit: int, api: str, as_json: bool) -> None:
        """Show a market's most recent final trades, oldest first."""
        data = request(api, "GET", f"/trades/{market}?limit={limit}")
        if as_json:
            return emit_json(data)
        if not data["trades"]:
            click.echo("no trades yet")
            return
        print_table(["trade", "price", "qty", "taker", "buy order", "sell order"], _trade_rows(data["trades"]))
        click.echo(f"{data.get('trade_count', len(data['trades']))} trades in total; "
                   f"trade log hash {data.get('trade_log_hash', '')[:16]}")
