"""A minimal market maker: quotes around the mid and keeps its dead-man's switch armed while it runs, so its
quotes leave the book within seconds if this process, its machine or its node dies.

    python clients/python/examples/market_maker.py --api http://127.0.0.1:7947 --token "$(cat DATA_DIR/.cookie)"
"""
from __future__ import annotations

import argparse
import asyncio
from decimal import Decimal

from exchange_node_client import AsyncClient


async def main(api: str, token: str, market: str, spread: Decimal, size: str) -> None:
    async with AsyncClient(api, token) as client:
        while True:
            book = await client.book(market, 1)
            bid = Decimal(book["bids"][0][0]) if book["bids"] else Decimal(100)
            ask = Decimal(book["asks"][0][0]) if book["asks"] else bid + spread
            mid = (bid + ask) / 2
            await client.cancel_after(15)                       # refreshed every loop: fires only if we stop
            await client.cancel_all(market)
            await client.place(market, "buy", size, str((mid - spread / 2).quantize(Decimal("0.01"))))
            await client.place(market, "sell", size, str((mid + spread / 2).quantize(Decimal("0.01"))))
            await asyncio.sleep(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:7947")
    parser.add_argument("--token", required=True)
    parser.add_argument("--market", default="BTC-USD")
    parser.add_argument("--spread", type=Decimal, default=Decimal("1"))
    parser.add_argument("--size", default="0.1")
    options = parser.parse_args()
    asyncio.run(main(options.api, options.token, options.market, options.spread, options.size))
