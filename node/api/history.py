"""Control API for trade history: trades and an account's fills by block time with cursors, and OHLCV candles.

`GET /trades/{market}?from=&to=&cursor=&limit=` pages through the kept trades (times in ms since the
epoch, block time; `next_cursor` continues the page, null at the end); `GET /accounts/{id}/fills` is the
same for the trades an account was in; `GET /candles/{market}?interval=1m&from=&to=` answers
`{"candles": [{"t", "open", "high", "low", "close", "volume", "quote_volume", "trades"}]}`. All come from
the state's kept trade log (`trade_history` per market, set at founding), so every node at one height
answers the same; a cursor whose trade has left the log is 410 `cursor_expired`. With `HISTORY_DB` set, the
ranges, fills and candles come from the indexer's database and then the kept trades after it (node/history_db.py),
the same answers over the whole history; 503 `history_db_unavailable` while it cannot be read.
"""
from __future__ import annotations


from aiohttp import web

from exchange.app.candles import INTERVALS_MS, CursorExpired
from node.api.base import ApiError, JsonObject, json_response, reads_of
from node.api.orders import DEFAULT_TRADES, MAX_TRADES, _account, _finality, _market, _markets, _query_number
from node.api.proofs import proved_fills, proved_trades, wants_proof
from node.history_db import HISTORY_DB, HistoryUnavailable

MAX_TIME_MS = (1 << 53) - 1
RANGE_KEYS = ("from", "to", "cursor")


def _range(request: web.Request) -> tuple[int | None, int | None, str | None, int]:
    start = _query_number(request, "from", None, 0, MAX_TIME_MS, integer=True)
    end = _query_number(request, "to", None, 0, MAX_TIME_MS, integer=True)
    if start is not None and end is not None and end < start:
        raise ApiError(400, "invalid_range", "to must not be before from", "to")
    cursor = request.query.get("cursor") or None
    if cursor is not None and (len(cursor) > 200 or not cursor.isprintable()):
        raise ApiError(400, "invalid_cursor", "not a cursor this node handed out", "cursor")
    return start, end, cursor, _query_number(request, "limit", 1000, 1, MAX_TRADES, integer=True)


def _unavailable(exc: HistoryUnavailable) -> ApiError:
    return ApiError(503, "history_db_unavailable", f"the history database cannot be read: {exc}", retry_after=5.0)


async def _page(request: web.Request, market: str, account: str | None) -> JsonObject:
    reads = reads_of(request)
    _markets(reads)
    start, end, cursor, limit = _range(request)
    history = request.app.get(HISTORY_DB)
    try:
        if history is None:
            trades, after = reads.trades_between(market, start, end, cursor, limit, account)
        else:
            trades, after = await history.trades_between(reads, market, start, end, cursor, limit, account,
                                                              request.remote or "")
    except HistoryUnavailable as exc:
        raise _unavailable(exc) from None
    except CursorExpired:
        raise ApiError(410, "cursor_expired", "the trade this cursor continues from has left the kept history; "
                       "start again with from=", "cursor") from None
    return {"market": market, "trades": trades, "next_cursor": after, **_finality(reads)}


async def get_trades(request: web.Request) -> web.Response:
    """The newest `limit` kept trades (oldest first), or with from/to/cursor a page by block time."""
    reads = reads_of(request)
    market = _market(_markets(reads), request.match_info["market"])
    if wants_proof(request):
        return await proved_trades(request, market)
    if any(key in request.query for key in RANGE_KEYS):
        return json_response(await _page(request, market, None))
    limit = _query_number(request, "limit", DEFAULT_TRADES, 0, MAX_TRADES, integer=True)
    return json_response({"market": market, "trades": reads.trades(market, limit), **_finality(reads)})


async def get_fills(request: web.Request) -> web.Response:
    registry = _markets(reads_of(request))
    account = request.match_info["account"]
    if len(account) != 64:
        account = _account(request, account).id
    if wants_proof(request):
        return await proved_fills(request, account)
    market = _market(registry, request.query.get("market", "BTC-USD" if "BTC-USD" in registry
                                                 else registry.symbols[0]))
    return json_response({"account": account, **(await _page(request, market, account))})


async def get_candles(request: web.Request) -> web.Response:
    reads = reads_of(request)
    market = _market(_markets(reads), request.match_info["market"])
    interval = request.query.get("interval", "1m")
    if interval not in INTERVALS_MS:
        raise ApiError(400, "invalid_interval", f"interval must be one of {', '.join(INTERVALS_MS)}", "interval")
    start, end, _, _ = _range(request)
    history = request.app.get(HISTORY_DB)
    try:
        found = reads.candles(market, INTERVALS_MS[interval], start, end) if history is None else \
            await history.candles(reads, market, INTERVALS_MS[interval], start, end, request.remote or "")
    except HistoryUnavailable as exc:
        raise _unavailable(exc) from None
    return json_response({"market": market, "interval": interval, "candles": found, **_finality(reads)})


def install_history_api(app: web.Application) -> None:
    app.router.add_get("/trades/{market}", get_trades)
    app.router.add_get("/candles/{market}", get_candles)
    app.router.add_get("/accounts/{account}/fills", get_fills)
