"""CLI commands for trade history: `candles` and `history` (every kept trade by block time, or CSV for export).
Times are shown as ISO-8601 UTC; `--json` and CSV keep the epoch milliseconds and add the ISO time."""
from __future__ import annotations

import csv
import datetime
import sys
from typing import Iterator, Mapping
from urllib.parse import quote, urlencode

import click

from node.cli.main import api_option, emit_json, json_option, print_table, request
from node.cli.client import Json, iso_utc, with_iso
from node.locate import NodeTarget

CSV_FIELDS = ("time_ms", "height", "id", "market", "price", "qty", "taker_side", "buyer", "seller", "buy_order_id",
              "sell_order_id", "time")


class Moment(click.ParamType[int]):
    """A block time: milliseconds since the epoch, or an ISO-8601 time (`2026-11-29T13:46:39Z`; UTC when it
    names no offset)."""

    name = "time"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        try:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is neither milliseconds since the epoch nor an ISO-8601 time like "
                      f"2026-11-29T13:46:39Z", param, ctx)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return int(moment.timestamp() * 1000)


MOMENT = Moment()


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
    @click.option("--from", "start", type=MOMENT, default=None, metavar="TIME",
                  help="From this block time (ISO-8601, UTC unless it names an offset, or ms since the epoch).")
    @click.option("--to", "end", type=MOMENT, default=None, metavar="TIME",
                  help="Up to this block time (ISO-8601 or ms since the epoch).")
    @api_option
    @json_option
    def candles(market: str, interval: str, start: int | None, end: int | None, api: NodeTarget,
                as_json: bool) -> None:
        """OHLCV candles of a market's kept trades, by block time (every node answers the same)."""
        query = {"interval": interval, **({"from": start} if start is not None else {}),
                 **({"to": end} if end is not None else {})}
        data = request(api, "GET", f"/candles/{quote(market, safe='')}?{urlencode(query)}", expect=("candles",))
        if as_json:
            return emit_json({**data, "candles": [with_iso(c, "t") for c in data["candles"]]})
        print_table(["open time (UTC)", "open", "high", "low", "close", "volume", "quote volume", "trades"],
                    [[iso_utc(c["t"]), c["open"], c["high"], c["low"], c["close"], c["volume"], c["quote_volume"], c["trades"]]
                     for c in data["candles"]])

    @cli.command()
    @click.argument("market")
    @click.option("--from", "start", type=MOMENT, default=None, metavar="TIME",
                  help="From this block time (ISO-8601, UTC unless it names an offset, or ms since the epoch).")
    @click.option("--to", "end", type=MOMENT, default=None, metavar="TIME",
                  help="Up to this block time (ISO-8601 or ms since the epoch).")
    @click.option("--csv", "as_csv", is_flag=True, help="Write CSV to stdout (an export of the kept history).")
    @api_option
    @json_option
    def history(market: str, start: int | None, end: int | None, as_csv: bool, api: NodeTarget,
                as_json: bool) -> None:
        """Every kept trade of a market in a block-time range, oldest first, paged with cursors."""
        query = {"from": start if start is not None else 0, **({"to": end} if end is not None else {})}
        trades = (with_iso(t, "time_ms") for t in _pages(api, market, query))
        if as_csv:
            writer = csv.DictWriter(sys.stdout, CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(trades)
            return
        rows = list(trades)
        if as_json:
            return emit_json({"market": market, "trades": rows})
        print_table(["time (UTC)", "trade", "price", "qty", "taker"],
                    [[iso_utc(t["time_ms"]), t["id"], t["price"], t["qty"], t["taker_side"]] for t in rows])
