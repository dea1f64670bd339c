"""The REST side: every control API endpoint a trader uses, typed answers, Retry-After honoured.

With a `Signer` the client signs every operation itself (the node never sees the key; any node of the
network will do); without one the node signs with one of its own accounts (`account`, default
`default`). Each order-changing call returns an `Answer`: `final` once a certified block holds it (it
never changes after), else `reason` (`no_quorum`, `not_final_yet`) while the node keeps handing it on.
A 429 or 503 is retried after the node's Retry-After, up to `retries` times; other refusals raise
`ApiError` with the node's stable code.
"""
from __future__ import annotations

import asyncio
import decimal
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlencode

import aiohttp

from exchange_node_client.errors import ApiError, Rejected
from exchange_node_client.json_types import Json, JsonObject, Op, SignedTx
from exchange_node_client.signing import Signer, order_id, signed_text, tx_id


EXAMPLES = {"price": "100.25", "qty": "0.5"}


def decimal_text(value: object, field: str) -> str:
    """A price or quantity as the decimal string the node takes: a str as given, an int or a finite Decimal
    written out; a float is refused here, before anything is signed or sent, saying what to send instead."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return format(value, "f")
    like = f'a decimal string like "{EXAMPLES.get(field, "12.34")}"'
    if isinstance(value, float):
        raise TypeError(f"{field} must be {like}, not a float ({value!r}): a float cannot hold most decimals "
                        f"exactly; send a str or a decimal.Decimal")
    raise TypeError(f"{field} must be {like}, not {type(value).__name__}")


@dataclass
class Answer:
    """What the node answered for one operation."""

    final: bool
    status: int
    body: JsonObject
    reason: str | None = None
    order: JsonObject | None = None
    trades: list[JsonObject] = field(default_factory=list)

    @property
    def order_id(self) -> str | None:
        return None if self.order is None else self.order.get("id")


class AsyncClient:
    def __init__(self, api_url: str, token: str | None = None, signer: Signer | None = None,
                 account: str | None = None, retries: int = 3, timeout: float = 40.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.token, self.signer, self.account = token, signer, account
        self.retries = retries
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._chain_id: str | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ HTTP

    async def request(self, method: str, path: str, body: object = None) -> tuple[int, Json]:
        """One API call; 429/503 retried after Retry-After (bounded); other errors raise ApiError."""
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        for attempt in range(self.retries + 1):
            async with self._session.request(method, self.api_url + path, json=body) as response:
                data = await response.json(content_type=None)
                if response.status < 400:
                    return response.status, data
                error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                retry_after = response.headers.get("Retry-After")
                failure = ApiError(response.status, error.get("code", "http_error"), error.get("message", ""),
                                   error.get("field"), float(retry_after) if retry_after else None, data)
            if not failure.retryable or attempt == self.retries:
                raise failure
            await asyncio.sleep(min(failure.retry_after or 1.0, 30.0))
        raise AssertionError("unreachable")

    async def get(self, path: str) -> Json:
        return (await self.request("GET", path))[1]

    # ------------------------------------------------------------------ reads

    async def status(self) -> JsonObject:
        return cast(JsonObject, await self.get("/status"))

    async def chain_id(self) -> str:
        if self._chain_id is None:
            self._chain_id = (await self.status())["chain_id"]
            if not self._chain_id:
                raise ApiError(503, "no_chain_yet", "the node has not joined a network yet")
        return self._chain_id

    async def book(self, market: str, depth: int = 25) -> JsonObject:
        return cast(JsonObject, await self.get(f"/book/{market}?depth={depth}"))

    async def trades(self, market: str, limit: int = 100) -> list[JsonObject]:
        return cast(list[JsonObject], (await self.get(f"/trades/{market}?limit={limit}"))["trades"])

    async def order(self, order_id_: str) -> JsonObject:
        return cast(JsonObject, (await self.get(f"/orders/{order_id_}"))["order"])

    async def orders(self, account: str | None = None, status: str | None = None,
                     limit: int = 100) -> list[JsonObject]:
        query = "&".join(f"{k}={v}" for k, v in (("account", account or self._account_id()), ("status", status),
                                                  ("limit", limit)) if v is not None)
        return cast(list[JsonObject], (await self.get(f"/orders?{query}"))["orders"])

    async def orders_by_client_id(self, client_id: str, account: str | None = None) -> list[JsonObject]:
        """The account's order that holds `client_id` (final, or one the node holds pending): [] when none does. The
        account is the signer's (or the one its agent key trades for), else the client's, else the node's default:
        the same client id of another account is never this client's."""
        who = account or self._account_id() or "default"
        query = urlencode({"client_id": client_id, "account": who})
        return cast(list[JsonObject], (await self.get(f"/orders?{query}"))["orders"])

    async def account_view(self, account: str | None = None) -> JsonObject:
        return cast(JsonObject, await self.get(f"/accounts/{account or self._account_id() or 'default'}"))

    async def fills(self, market: str, start_ms: int = 0, end_ms: int | None = None, account: str | None = None,
                    cursor: str | None = None, limit: int = 1000) -> tuple[list[JsonObject], str | None]:
        """A page of the account's trades by block time, and the cursor of the next page (None at the end)."""
        query = f"market={market}&from={start_ms}&limit={limit}" + (f"&to={end_ms}" if end_ms is not None else "") \
            + (f"&cursor={cursor}" if cursor else "")
        page = await self.get(f"/accounts/{account or self._account_id() or 'default'}/fills?{query}")
        return page["trades"], page["next_cursor"]

    async def trade_history(self, market: str, start_ms: int = 0, end_ms: int | None = None) -> list[JsonObject]:
        """Every kept trade of a market in [start, end) by block time, through the cursors."""
        found: list[JsonObject] = []
        cursor: str | None = None
        while True:
            query = f"from={start_ms}&limit=10000" + (f"&to={end_ms}" if end_ms is not None else "") \
                + (f"&cursor={cursor}" if cursor else "")
            page = await self.get(f"/trades/{market}?{query}")
            found += page["trades"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    async def candles(self, market: str, interval: str = "1m", start_ms: int | None = None,
                      end_ms: int | None = None) -> list[JsonObject]:
        query = f"interval={interval}" + (f"&from={start_ms}" if start_ms is not None else "") \
            + (f"&to={end_ms}" if end_ms is not None else "")
        return cast(list[JsonObject], (await self.get(f"/candles/{market}?{query}"))["candles"])

    async def peers(self) -> list[JsonObject]:
        return cast(list[JsonObject], (await self.get("/peers"))["peers"])

    async def validators(self) -> JsonObject:
        return cast(JsonObject, await self.get("/validators"))

    async def routing(self) -> JsonObject:
        return cast(JsonObject, await self.get("/routing"))

    async def ready(self) -> JsonObject:
        """/ready's checks, whether it answers 200 or 503."""
        try:
            return cast(JsonObject, await self.get("/ready"))
        except ApiError as error:
            if error.status == 503 and isinstance(error.body, dict):
                return error.body
            raise

    async def rpc(self, service: str, payload: object, timeout: float | None = None) -> Json:
        """Call an RPC service through the node's adaptive router."""
        body: dict[str, object] = {"payload": payload, **({"timeout": timeout} if timeout is not None else {})}
        return (await self.request("POST", f"/rpc/{service}", body))[1]

    def _account_id(self) -> str | None:
        return self.signer.trades_for if self.signer is not None else self.account

    # ------------------------------------------------------------------ orders

    async def place(self, market: str, side: str, qty: str, price: str | None = None, type: str = "limit",
                    stp: str | None = None, until: int | None = None, wait: float = 2.0,
                    client_id: str | None = None, trigger_price: str | None = None,
                    reduce_only: bool = False) -> Answer:
        """A new order (decimal strings; `until`: good-til-time, ms since the epoch; `client_id`: your own id for
        it, 1-36 of A-Z a-z 0-9 _ -, unique among the account's open and recent orders, to find or cancel it by
        after a timeout; `type` stop_market, stop_limit or take_profit with `trigger_price`: placed by the block
        whose last trade price crosses it; `reduce_only`: only shrinks the position, never rests). A float price
        or quantity raises TypeError (send a str or a Decimal)."""
        qty, price = decimal_text(qty, "qty"), None if price is None else decimal_text(price, "price")
        op: dict[str, str | int | None] = {"op": "new", "market": market, "side": side, "type": type, "price": price, "qty": qty,
                              "stp": stp}
        if until is not None:
            op["until"] = until
        if client_id is not None:
            op["client_id"] = client_id
        if trigger_price is not None:
            op["trigger_price"] = decimal_text(trigger_price, "price")
        if reduce_only:
            op["reduce_only"] = True
        if self.signer is not None:
            body: dict[str, object] = {"signed": self.signer.sign(await self.chain_id(), [op])}
        else:
            body = {k: v for k, v in op.items() if k != "op" and v is not None}
            if self.account:
                body["account"] = self.account
        status, data = await self.request("POST", f"/orders?wait={wait}", body)
        return Answer(bool(data.get("final")), status, data, data.get("reason"), data.get("order"),
                      data.get("trades", []))

    async def cancel(self, order_id_: str, market: str | None = None, wait: float = 2.0) -> Answer:
        body: dict[str, object] | None = None
        if self.signer is not None:
            market = market or (await self.order(order_id_))["market"]
            body = {"signed": self.signer.sign(await self.chain_id(), [
                {"op": "cancel", "market": market, "order_id": order_id_}])}
        status, data = await self.request("DELETE", f"/orders/{order_id_}?wait={wait}", body)
        cancel = data.get("cancel", {})
        answer = Answer(bool(data.get("final")), status, data, cancel.get("reason"), data.get("order"))
        if cancel.get("status") == "rejected":
            raise Rejected("cancel", cancel.get("reason"), data)
        return answer

    async def cancel_by_client_id(self, client_id: str, wait: float = 2.0) -> Answer:
        """Cancel the account's order that holds `client_id` (ApiError `unknown_client_id` when none does)."""
        found = await self.orders_by_client_id(client_id)
        if not found:
            raise ApiError(404, "unknown_client_id", f"no open or recent order holds client id {client_id!r}",
                           "client_id")
        if self.signer is not None:
            return await self.cancel(found[0]["id"], found[0]["market"], wait)
        query = urlencode({"client_id": client_id, "wait": wait, "account": self.account or "default"})
        status, data = await self.request("DELETE", f"/orders?{query}")
        cancel = data.get("cancel", {})
        if cancel.get("status") == "rejected":
            raise Rejected("cancel", cancel.get("reason"), data)
        return Answer(bool(data.get("final")), status, data, cancel.get("reason"), data.get("order"))

    async def replace(self, order_id_: str, qty: str, price: str | None, market: str | None = None,
                      wait: float = 2.0) -> Answer:
        """Replace a resting order (a new id, a new place in the queue); needs a Signer."""
        if self.signer is None:
            raise ValueError("replace needs the account's key (a Signer)")
        qty, price = decimal_text(qty, "qty"), None if price is None else decimal_text(price, "price")
        market = market or (await self.order(order_id_))["market"]
        op = {"op": "replace", "market": market, "order_id": order_id_, "price": price, "qty": qty}
        signed = self.signer.sign(await self.chain_id(), [op])
        status, data = await self.request("POST", f"/orders/batch?wait={wait}", {"signed": signed})
        item = data["results"][0]
        if "error" in item:
            error = item["error"]
            raise ApiError(422, error["code"], error["message"], error.get("field"), body=data)
        result = item.get("result") or {}
        if result.get("outcome") == "rejected":
            raise Rejected("replace", result.get("reason"), item)
        return Answer(bool(item.get("final")), status, item, item.get("reason"), item.get("order"))

    async def atomic(self, ops: list[dict[str, object]], wait: float = 2.0) -> list[JsonObject]:
        """New orders (`{"op": "new", "market", "side", "type", "price", "qty", ...}`), cancels (`{"op": "cancel",
        "market", "order_id"}`) and replaces (`{"op": "replace", "market", "order_id", "price", "qty"}`) in one
        transaction the chain runs all or none of: the answer's results, the `atomic` marker's first (its
        `result.reason` says which operation refused the batch and why)."""
        if self.signer is not None:
            signed = self.signer.sign(await self.chain_id(), [{"op": "atomic"}, *ops])  # type: ignore[list-item]
            body: dict[str, object] = {"signed": signed}
        else:
            body = {"atomic": True, "orders": ops, **({"account": self.account} if self.account else {})}
        status, data = await self.request("POST", f"/orders/batch?wait={wait}", body)
        return cast(list[JsonObject], data["results"])

    async def cancel_all(self, market: str | None = None, side: str | None = None, wait: float = 2.0) -> Answer:
        """Cancel every open order of the account (in `market`, on `side` when given) in one operation."""
        scope = {"market": market, "side": side}
        body = await self._body({"op": "cancel_all", **scope}, {k: v for k, v in scope.items() if v})
        status, data = await self.request("POST", f"/orders/cancel-all?wait={wait}", body)
        return Answer(bool(data.get("final")), status, data, data["cancel_all"].get("reason"))

    async def cancel_after(self, seconds: float | None, wait: float = 2.0) -> Answer:
        """The dead-man's switch: the validators cancel all the account's orders `seconds` from now unless
        this is called again first (None disarms it). Refresh well inside the window."""
        import time

        at = None if seconds is None else int((time.time() + seconds) * 1000)
        plain: dict[str, object] = {"at": None} if seconds is None else {"after": seconds}
        body = await self._body({"op": "schedule_cancel", "at": at}, plain)
        status, data = await self.request("POST", f"/orders/cancel-after?wait={wait}", body)
        return Answer(bool(data.get("final")), status, data, data["schedule_cancel"].get("reason"))

    async def approve_agent(self, agent: str, markets: list[str] | None = None, operations: list[str] | None = None,
                            cap: str | None = None, expires: int | None = None, wait: float = 2.0) -> Answer:
        """Approve (or re-scope) the agent key `agent` (64 hex) for this account: only `markets` (None: all), only
        `operations` (place, cancel, replace; None: all three), orders of at most `cap` notional in their quote
        asset, until block time `expires` (ms; None: until revoked). Raises Rejected with the state's reason."""
        kinds = ",".join(operations or ["place", "cancel", "replace"])
        op = {"op": "approve_agent", "agent": agent, "markets": None if markets is None else ",".join(markets),
              "operations": kinds, "cap": cap, "expires": expires}
        body = await self._body(op, {"agent": agent, "markets": markets, "operations": kinds.split(","), "cap": cap,
                                     "expires": expires})
        return await self._agent_call("approve_agent", "POST", f"/agents?wait={wait}", body)

    async def revoke_agent(self, agent: str, wait: float = 2.0) -> Answer:
        """Revoke an agent key of this account: its transactions are refused from the block that holds this on."""
        body: dict[str, object] | None = None
        if self.signer is not None:
            body = {"signed": self.signer.sign(await self.chain_id(), [{"op": "revoke_agent", "agent": agent}])}
        query = urlencode({"wait": wait, **({"account": self.account} if self.account and not self.signer else {})})
        return await self._agent_call("revoke_agent", "DELETE", f"/agents/{agent}?{query}", body)

    async def agents(self, account: str | None = None) -> list[JsonObject]:
        """The account's agent keys and their scopes, as the chain's state holds them."""
        who = account or self._account_id()
        return cast(list[JsonObject], (await self.get("/agents" + (f"?account={who}" if who else "")))["agents"])

    async def _agent_call(self, what: str, method: str, path: str, body: object) -> Answer:
        """An approval or revoke: the node answers 409 with the op's result when the chain refused it."""
        try:
            status, data = await self.request(method, path, body)
        except ApiError as error:
            if error.status == 409 and isinstance(error.body, dict) and what in error.body:
                raise Rejected(what, error.body[what].get("reason"), error.body) from None
            raise
        result = data.get(what, {})
        return Answer(bool(data.get("final")), status, data, result.get("reason"))

    async def _body(self, op: Op, plain: dict[str, object]) -> dict[str, object]:
        if self.signer is not None:
            return {"signed": self.signer.sign(await self.chain_id(), [op])}
        return {**plain, **({"account": self.account} if self.account else {})}

    @staticmethod
    def order_ids(signed: SignedTx) -> list[str]:
        """The order ids a signed transaction's operations make, before it is sent."""
        text = signed_text(signed["chain_id"], signed["account"], signed["nonce"], signed["expires"], signed["ops"])
        return [order_id(tx_id(text), i) for i in range(len(signed["ops"]))]
