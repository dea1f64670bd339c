"""CLI commands for trade history: `candles` and `history` (every kept trade by block time, or CSV for export)."""
from __future__ import annotations

import csv
import sys
from typing import Iterator, Mapping
from urllib.parse import quote, urlencode

import click

from node.cli.main import api_option, emit_json, json_option, print_table, request
from node.cli.client import Json
from node.locate import NodeTarget

CSV_FIELDS = ("time_ms", "height", "id", "market", "price", "qty", "taker_side", "buyer", "seller", "buy_order_id",
              "sell_order_id")


def _pages(api: NodeTarget, market: str, query: Mapping[str, object]) -> Iterator[Json]:
    cursor = None
    while True:
        page = request(api, "GET", f"/trades/{quote(market, safe='')}?"
                       + urlencode({**query, "limit": 10_000, **({"cursor": cursor} if cursor else {})}),
                       expect=("trades",))
        yield from page["trades"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("market")
    @click.option("--interval", default="1m", show_default=True,
                  type=click.Choice(["1m", "5m", "15m", "1h", "4h", "1d"]))
    @click.option("--from", "start", type=int, default=None, metavar="MS", help="From this block time (ms).")
    @click.option("--to", "end", type=int, default=None, metavar="MS", help="Up to this block time (ms).")
    @api_option
    @json_option
    def candles(market: str, interval: str, start: int | None, end: int | None, api: NodeTarget,
                as_json: bool) -> None:
        """OHLCV candles of a market's kept trades, by block time (every node answers the same)."""
        query = {"interval": interval, **({"from": start} if start is not None else {}),
                 **({"to": end} if end is not None else {})}
        data = request(api, "GET", f"/candles/{quote(market, safe='')}?{urlencode(query)}", expect=("candles",))
        if as_json:
            return emit_json(data)
        print_table(["open time (ms)", "open", "high", "low", "close", "volume", "quote volume", "trades"],
                    [[c["t"], c["open"], c["high"], c["low"], c["close"], c["volume"], c["quote_volume"], c["trades"]]
                     for c in data["candles"]])

    @cli.command()
    @click.argument("market")
    @click.option("--from", "start", type=int, default=None, metavar="MS", help="From this block time (ms).")
    @click.option("--to", "end", type=int, default=None, metavar="MS", help="Up to this block time (ms).")
    @click.option("--csv", "as_csv", is_flag=True, help="Write CSV to stdout (an export of the kept history).")
    @api_option
    @json_option
    def history(market: str, start: int | None, end: int | None, as_csv: bool, api: NodeTarget,
                as_json: bool) -> None:
        """Every kept trade of a market in a block-time range, oldest first, paged with cursors."""
        query = {"from": start if start is not None else 0, **({"to": end} if end is not None else {})}
        trades = _pages(api, market, query)
        if as_csv:
            writer = csv.DictWriter(sys.stdout, CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(trades)
            return
        rows = list(trades)
        if as_json:
            return emit_json({"market": market, "trades": rows})
        print_table(["time (ms)", "trade", "price", "qty", "taker"],
                    [[t["time_ms"], t["id"], t["price"], t["qty"], t["taker_side"]] for t in rows])
