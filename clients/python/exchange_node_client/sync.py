"""A blocking wrapper for scripts and notebooks: the async client on a private event loop in a thread."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, TypeVar

from exchange_node_client.client import Answer, AsyncClient
from exchange_node_client.json_types import JsonObject
from exchange_node_client.signing import Signer

T = TypeVar("T")


class Client:
    """The same calls as `AsyncClient`, blocking: `Client(url, token).place("BTC-USD", "buy", "1", "100")`."""

    def __init__(self, api_url: str, token: str | None = None, signer: Signer | None = None,
                 account: str | None = None, retries: int = 3) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="exchange-node-client")
        self._thread.start()
        self.inner = AsyncClient(api_url, token, signer, account, retries)

    def _run(self, coroutine: Coroutine[object, object, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        self._run(self.inner.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> JsonObject:
        return self._run(self.inner.status())

    def book(self, market: str, depth: int = 25) -> JsonObject:
        return self._run(self.inner.book(market, depth))

    def trades(self, market: str, limit: int = 100) -> list[JsonObject]:
        return self._run(self.inner.trades(market, limit))

    def order(self, order_id: str) -> JsonObject:
        return self._run(self.inner.order(order_id))

    def orders(self, account: str | None = None, status: str | None = None, limit: int = 100) -> list[JsonObject]:
        return self._run(self.inner.orders(account, status, limit))

    def orders_by_client_id(self, client_id: str, account: str | None = None) -> list[JsonObject]:
        return self._run(self.inner.orders_by_client_id(client_id, account))

    def cancel_by_client_id(self, client_id: str, wait: float = 2.0) -> Answer:
        return self._run(self.inner.cancel_by_client_id(client_id, wait))

    def candles(self, market: str, interval: str = "1m") -> list[JsonObject]:
        return self._run(self.inner.candles(market, interval))

    def trade_history(self, market: str, start_ms: int = 0, end_ms: int | None = None) -> list[JsonObject]:
        return self._run(self.inner.trade_history(market, start_ms, end_ms))

    def place(self, market: str, side: str, qty: str, price: str | None = None,
              **options: Any) -> Answer:  # Any: AsyncClient.place's keyword options (type, stp, until, wait, client_id)
        return self._run(self.inner.place(market, side, qty, price, **options))

    def cancel(self, order_id: str, market: str | None = None, wait: float = 2.0) -> Answer:
        return self._run(self.inner.cancel(order_id, market, wait))

    def replace(self, order_id: str, qty: str, price: str | None, market: str | None = None,
                wait: float = 2.0) -> Answer:
        return self._run(self.inner.replace(order_id, qty, price, market, wait))

    def cancel_all(self, market: str | None = None, side: str | None = None, wait: float = 2.0) -> Answer:
        return self._run(self.inner.cancel_all(market, side, wait))

    def cancel_after(self, seconds: float | None, wait: float = 2.0) -> Answer:
        return self._run(self.inner.cancel_after(seconds, wait))
