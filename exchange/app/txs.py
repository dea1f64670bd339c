"""Signed account transactions: what a user asks the exchange to do, in bytes anyone can check.

A transaction is one account's signed request carrying 1..MAX_OPS operations (a new order, a
cancel, a replace, a credit grant). The account is an Ed25519 public key; the signature covers
a short UTF-8 text (`signed_bytes`) that any language can rebuild without a serialiser:

    exchange-node/tx/v1
    chain=<chain id: 64 hex, the network's genesis hash>
    account=<64 hex public key>
    for=<64 hex: the account an agent key acts for>       (only in an agent's transaction)
    nonce=<1-64 of A-Z a-z 0-9 . _ : ->
    expires=<integer milliseconds since the Unix epoch>
    new <market> <buy|sell> <type> <price|-> <qty> <stp mode|->[ until=<ms>][ cid=<id>][ trigger=<price>][ reduce_only]
    cancel <market> <order id>
    cancel_all <market|-> <buy|sell|->
    schedule_cancel <ms|->
    replace <market> <order id> <price|-> <qty>
    grant <account: 64 hex> <asset> <limit>
    approve_agent <agent key: 64 hex> <market,...|-> <place|cancel|replace,...> <notional cap|-> <expires ms|->
    revoke_agent <agent key: 64 hex>
    atomic                                   (first, then only new, cancel and replace: all or none of them)

lines joined by a single "\\n" (no trailing newline), one operation line per op, in order.
Prices and quantities are the decimal strings the user gave (the market's tick and lot turn
them into integers when the transaction is applied, the same way on every node). A `grant`
sets the largest short position (`limit`, a decimal amount of `asset`) the account may hold;
only the network's credit authority may sign one, which the state machine judges. `until` makes a
resting order good-til-time: the first block at or after that time cancels what is left of it.
A type is limit, market, ioc, fok, post_only, or a trigger type (stop_market, stop_limit, take_profit) that
waits outside the book for the last trade price to cross `trigger` (triggers.py); `reduce_only` orders only
shrink the account's position and never rest. `cid` is the client's own id for the order (1-36 of
A-Z a-z 0-9 _ -): the state machine keeps it unique per account among the account's open and recent
orders, and finds and cancels orders by it.
`cancel_all` cancels every open order of the account (in one market and on one side when named);
`schedule_cancel` is the dead-man's switch: the first block at or after that time cancels every
open order of the account unless a later `schedule_cancel` moved or cleared (`-`) it first.
An account approves an agent key (`approve_agent`) with a scope and revokes it (`revoke_agent`); the agent
then signs with its own key and says whose account it acts for (`for=`): the state machine judges the
scope (agents.py).

The transaction id is the first 32 hex characters of sha256(signed bytes); the order id of
operation i is the first 30 of them followed by i as two hex digits, so a client knows its
order ids before it sends anything. Only shape, sizes, character sets and the signature are
checked here (statelessly); what a valid transaction then does is the state machine's call.

Over 500 lines on purpose: the one signed format, every operation's parse, line, wire and JSON form side by side,
so a change to what is signed reads in one place.
"""
from __future__ import annotations

import re
from typing import Callable, Literal, NotRequired, Sequence, TypedDict, Union, cast

from exchange.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, sha256, verify
from exchange.wire import Unchecked, Wire

DOMAIN = "exchange-node/tx/v1"
MAX_OPS = 250
MAX_EXPIRES = (1 << 53) - 1          # JSON-safe integer
SIDES = ("buy", "sell")
PLAIN_TYPES = ("limit", "market", "ioc", "fok", "post_only")
TRIGGER_TYPES = ("stop_market", "stop_limit", "take_profit")
ORDER_TYPES = PLAIN_TYPES + TRIGGER_TYPES
RESTING_TYPES = ("limit", "post_only")
# what may be placed without a price (a take-profit either way: a market order without, a limit order with one)
_NO_PRICE, _EITHER_PRICE = frozenset({"market", "stop_market"}), frozenset({"take_profit"})
STP_MODES = ("cancel_newest", "cancel_oldest", "cancel_both", "decrement_and_cancel")

_CHAIN_ID = re.compile(r"[0-9a-f]{64}")
_NONCE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_MARKET = re.compile(r"[A-Z0-9]{1,12}-[A-Z0-9]{1,12}")
_DECIMAL = re.compile(r"[0-9]{1,24}(\.[0-9]{1,24})?")
_ORDER_ID = re.compile(r"[0-9a-z._:-]{1,64}")
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,36}")
# market, price (or "-") and quantity of a new order in one match: none of them can hold a space, so the
# three cannot be split any other way (the fast path; a failure falls back to the checks that name the field)
_NEW_FIELDS = re.compile(r"[A-Z0-9]{1,12}-[A-Z0-9]{1,12} (?:-|[0-9]{1,24}(?:\.[0-9]{1,24})?) [0-9]{1,24}(?:\.[0-9]{1,24})?")
_SIDE_SET, _TYPE_SET, _STP_SET = frozenset(SIDES), frozenset(PLAIN_TYPES), frozenset(STP_MODES)
_ASSET = re.compile(r"[A-Z0-9]{1,12}")
_ACCOUNT_HEX = re.compile(r"[0-9a-f]{64}")
AGENT_OPERATIONS = ("place", "cancel", "replace")
MAX_AGENT_MARKETS = 16


class InvalidTx(ValueError):
    """A transaction that breaks the format; `code` names the problem, `field` where it is."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


def _need(ok: bool, code: str, message: str, field: str | None = None) -> None:
    if not ok:
        raise InvalidTx(code, message, field)


def _text(value: Unchecked, pattern: re.Pattern[str], field: str) -> str:
    _need(type(value) is str and pattern.fullmatch(value) is not None, f"invalid_{field}",
          f"{field} has a bad value", field)
    return cast("str", value)


_EXAMPLES = {"price": "100.25", "qty": "0.5", "limit": "1000", "trigger": "101.5"}


def _decimal(value: Unchecked, field: str) -> str:
    """A price, quantity or limit: a plain decimal string, refused with what is wrong and what is allowed."""
    if type(value) is str and _DECIMAL.fullmatch(value) is not None:
        return value
    raise InvalidTx(f"invalid_{field}", decimal_problem(value, field), field)


def decimal_problem(value: Unchecked, field: str) -> str:
    """Why `value` is not a plain decimal string for `field`, and what would be."""
    like = f'a decimal string like "{_EXAMPLES.get(field, "12.34")}"'
    if isinstance(value, bool) or value is None:
        return f"{field} must be {like}, not {str(value).lower() if value is not None else 'null'}"
    if isinstance(value, (int, float)):
        return f"{field} must be {like}, not a JSON number"
    if not isinstance(value, str):
        return f"{field} must be {like}, not a JSON {'array' if isinstance(value, list) else 'object'}"
    shown = value if len(value) <= 40 else value[:40] + "..."
    if value.startswith("-") and _DECIMAL.fullmatch(value[1:]) is not None:
        return f'{field} must be greater than zero, not "{shown}"'
    if not value:
        return f"{field} is empty: send {like}"
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        return f'{field} "{shown}" has more than 24 digits before or after the point'
    return f'{field} "{shown}" is not {like} (digits with at most one point: no sign, exponent or spaces)'


def _optional(value: Unchecked, check: Callable[[Unchecked], str]) -> str | None:
    return None if value is None else check(value)


class NewOrderJson(TypedDict):
    """A new order in a transaction's JSON form (as `SignedTx.from_json` reads it); `until` only when set."""

    op: Literal["new"]
    market: str
    side: str
    type: str
    price: str | None
    qty: str
    stp: str | None
    until: NotRequired[int]
    client_id: NotRequired[str]
    trigger_price: NotRequired[str]
    reduce_only: NotRequired[bool]


class CancelJson(TypedDict):
    op: Literal["cancel"]
    market: str
    order_id: str


class CancelAllJson(TypedDict):
    op: Literal["cancel_all"]
    market: str | None
    side: str | None


class ScheduleCancelJson(TypedDict):
    op: Literal["schedule_cancel"]
    at: int | None


class ReplaceJson(TypedDict):
    op: Literal["replace"]
    market: str
    order_id: str
    price: str | None
    qty: str


class GrantJson(TypedDict):
    op: Literal["grant"]
    account: str
    asset: str
    limit: str


class ApproveAgentJson(TypedDict):
    op: Literal["approve_agent"]
    agent: str
    markets: str | None
    operations: str
    cap: str | None
    expires: int | None


class AtomicJson(TypedDict):
    op: Literal["atomic"]


class RevokeAgentJson(TypedDict):
    op: Literal["revoke_agent"]
    agent: str


OpJson = Union[NewOrderJson, CancelJson, CancelAllJson, ScheduleCancelJson, ReplaceJson, GrantJson,
               ApproveAgentJson, RevokeAgentJson, AtomicJson]


class SignedTxJson(TypedDict):
    """A signed transaction's JSON form: what an external client posts, account and sig in hex (and, in an
    agent's transaction, `for`: the account it acts for, read with .get() as `for` is a Python keyword)."""

    chain_id: str
    account: str
    nonce: str
    expires: int
    ops: list[OpJson]
    sig: str


class NewOrderOp:
    __slots__ = ("market", "side", "type", "price", "qty", "stp", "until", "client_id", "trigger", "reduce_only")
    name = "new"

    def __init__(self, market: str, side: str, type: str, price: str | None, qty: str, stp: str | None,
                 until: int | None = None, client_id: str | None = None, trigger: str | None = None,
                 reduce_only: bool = False) -> None:
        self.market, self.side, self.type, self.price, self.qty, self.stp = market, side, type, price, qty, stp
        self.until, self.client_id, self.trigger, self.reduce_only = until, client_id, trigger, reduce_only

    def line(self) -> str:
        line = f"new {self.market} {self.side} {self.type} {self.price or '-'} {self.qty} {self.stp or '-'}"
        if self.until is not None:
            line = f"{line} until={self.until}"
        if self.client_id is not None:
            line = f"{line} cid={self.client_id}"
        if self.trigger is not None:
            line = f"{line} trigger={self.trigger}"
        return f"{line} reduce_only" if self.reduce_only else line

    def wire(self) -> Wire:
        """`[new, market, side, type, price, qty, stp]`, then `until, client id, trigger, reduce_only (true)` up to
        the last that is set, those before it nil when unset: one wire form per op."""
        wire: Wire = ["new", self.market, self.side, self.type, self.price, self.qty, self.stp,
                      self.until, self.client_id, self.trigger, True if self.reduce_only else None]
        while len(wire) > 7 and wire[-1] is None:
            wire.pop()
        return wire

    def as_json(self) -> NewOrderJson:
        view: NewOrderJson = {"op": "new", "market": self.market, "side": self.side, "type": self.type,
                              "price": self.price, "qty": self.qty, "stp": self.stp}
        if self.until is not None:
            view["until"] = self.until
        if self.client_id is not None:
            view["client_id"] = self.client_id
        if self.trigger is not None:
            view["trigger_price"] = self.trigger
        if self.reduce_only:
            view["reduce_only"] = True
        return view

    def price_problem(self) -> str | None:
        """`price_not_allowed` / `price_required` when the price does not fit the type, else None."""
        if self.type in _EITHER_PRICE:
            return None
        if (self.type in _NO_PRICE) != (self.price is None):
            return "price_not_allowed" if self.price is not None else "price_required"
        return None

    @classmethod
    def parse(cls, market: Unchecked, side: Unchecked, type: Unchecked, price: Unchecked, qty: Unchecked, stp: Unchecked,
              until: Unchecked = None, client_id: Unchecked = None, trigger: Unchecked = None,
              reduce_only: Unchecked = None) -> "NewOrderOp":
        if (side.__class__ is str and side in _SIDE_SET and type.__class__ is str and type in _TYPE_SET
                and (stp is None or (stp.__class__ is str and stp in _STP_SET)) and market.__class__ is str
                and qty.__class__ is str and (price is None or (price.__class__ is str and price != "-"))
                and until is None and client_id is None and trigger is None and reduce_only is None
                and _NEW_FIELDS.fullmatch(f"{market} {price or '-'} {qty}") is not None):
            return cls(market, side, type, price, qty, stp)
        return cls._parse_slowly(market, side, type, price, qty, stp, until, client_id, trigger, reduce_only)

    @classmethod
    def _parse_slowly(cls, market: Unchecked, side: Unchecked, type: Unchecked, price: Unchecked, qty: Unchecked, stp: Unchecked,
                      until: Unchecked, client_id: Unchecked, trigger: Unchecked, reduce_only: Unchecked) -> "NewOrderOp":
        _need(side in SIDES, "invalid_side", "side must be buy or sell", "side")
        _need(type in ORDER_TYPES, "invalid_type", f"type must be one of {', '.join(ORDER_TYPES)}", "type")
        _need(stp is None or stp in STP_MODES, "invalid_stp", f"stp must be one of {', '.join(STP_MODES)}", "stp")
        _need(until is None or _timestamp(until), "invalid_until",
              "until is a positive integer of milliseconds since the Unix epoch", "until")
        _need(until is None or type in RESTING_TYPES, "until_not_resting",
              f"only an order that can rest ({', '.join(RESTING_TYPES)}) can have until", "until")
        _need(client_id is None or (isinstance(client_id, str) and CLIENT_ID.fullmatch(client_id) is not None),
              "invalid_client_id", "client_id is 1 to 36 of A-Z a-z 0-9 _ -", "client_id")
        _need((trigger is None) == (type not in TRIGGER_TYPES), "trigger_required" if trigger is None else
              "trigger_not_allowed", f"a trigger_price goes with {', '.join(TRIGGER_TYPES)} orders and no other",
              "trigger_price")
        _need(reduce_only is None or reduce_only is True, "invalid_reduce_only", "reduce_only is true or absent", "reduce_only")
        _need(reduce_only is None or (type not in RESTING_TYPES and type != "stop_limit"
                                      and not (type == "take_profit" and price is not None)),
              "reduce_only_must_not_rest", "a reduce-only order never rests: market, ioc, fok, stop_market, or "
              "take_profit without a price", "reduce_only")
        return cls(_text(market, _MARKET, "market"), side, type, _optional(price, lambda v: _decimal(v, "price")),
                   _decimal(qty, "qty"), stp, until, client_id, _optional(trigger, lambda v: _decimal(v, "trigger")),
                   reduce_only is True)


class CancelOp:
    __slots__ = ("market", "order_id")
    name = "cancel"

    def __init__(self, market: str, order_id: str) -> None:
        self.market, self.order_id = market, order_id

    def line(self) -> str:
        return f"cancel {self.market} {self.order_id}"

    def wire(self) -> Wire:
        return ["cancel", self.market, self.order_id]

    def as_json(self) -> CancelJson:
        return {"op": "cancel", "market": self.market, "order_id": self.order_id}

    @classmethod
    def parse(cls, market: Unchecked, order_id: Unchecked) -> "CancelOp":
        return cls(_text(market, _MARKET, "market"), _text(order_id, _ORDER_ID, "order_id"))


class CancelAllOp:
    """Cancel every open order of the signing account, in one market and on one side when named."""

    __slots__ = ("market", "side")
    name = "cancel_all"

    def __init__(self, market: str | None, side: str | None) -> None:
        self.market, self.side = market, side

    def line(self) -> str:
        return f"cancel_all {self.market or '-'} {self.side or '-'}"

    def wire(self) -> Wire:
        return ["cancel_all", self.market, self.side]

    def as_json(self) -> CancelAllJson:
        return {"op": "cancel_all", "market": self.market, "side": self.side}

    @property
    def scope(self) -> str:
        """`market/side` with `*` for what is not named (the op result's target)."""
        return f"{self.market or '*'}/{self.side or '*'}"

    @classmethod
    def parse(cls, market: Unchecked, side: Unchecked) -> "CancelAllOp":
        _need(side is None or side in SIDES, "invalid_side", "side must be buy, sell or null", "side")
        return cls(_optional(market, lambda v: _text(v, _MARKET, "market")), side)


class ScheduleCancelOp:
    """The dead-man's switch: cancel every open order of the signing account at block time `at` (ms since the
    Unix epoch) unless moved or cleared (`at` null) before then."""

    __slots__ = ("at",)
    name = "schedule_cancel"

    def __init__(self, at: int | None) -> None:
        self.at = at

    def line(self) -> str:
        return f"schedule_cancel {'-' if self.at is None else self.at}"

    def wire(self) -> Wire:
        return ["schedule_cancel", self.at]

    def as_json(self) -> ScheduleCancelJson:
        return {"op": "schedule_cancel", "at": self.at}

    @classmethod
    def parse(cls, at: Unchecked) -> "ScheduleCancelOp":
        _need(at is None or _timestamp(at), "invalid_at",
              "at is a positive integer of milliseconds since the Unix epoch, or null to clear", "at")
        return cls(at)


class ReplaceOp:
    __slots__ = ("market", "order_id", "price", "qty")
    name = "replace"

    def __init__(self, market: str, order_id: str, price: str | None, qty: str) -> None:
        self.market, self.order_id, self.price, self.qty = market, order_id, price, qty

    def line(self) -> str:
        return f"replace {self.market} {self.order_id} {self.price or '-'} {self.qty}"

    def wire(self) -> Wire:
        return ["replace", self.market, self.order_id, self.price, self.qty]

    def as_json(self) -> ReplaceJson:
        return {"op": "replace", "market": self.market, "order_id": self.order_id, "price": self.price, "qty": self.qty}

    @classmethod
    def parse(cls, market: Unchecked, order_id: Unchecked, price: Unchecked, qty: Unchecked) -> "ReplaceOp":
        return cls(_text(market, _MARKET, "market"), _text(order_id, _ORDER_ID, "order_id"),
                   _optional(price, lambda v: _decimal(v, "price")), _decimal(qty, "qty"))


class GrantOp:
    """Set an account's credit limit in one asset (the largest short position it may hold)."""

    __slots__ = ("account", "asset", "limit")
    name = "grant"

    def __init__(self, account: str, asset: str, limit: str) -> None:
        self.account, self.asset, self.limit = account, asset, limit

    def line(self) -> str:
        return f"grant {self.account} {self.asset} {self.limit}"

    def wire(self) -> Wire:
        return ["grant", self.account, self.asset, self.limit]

    def as_json(self) -> GrantJson:
        return {"op": "grant", "account": self.account, "asset": self.asset, "limit": self.limit}

    @classmethod
    def parse(cls, account: Unchecked, asset: Unchecked, limit: Unchecked) -> "GrantOp":
        return cls(_text(account, _ACCOUNT_HEX, "account"), _text(asset, _ASSET, "asset"),
                   _decimal(limit, "limit"))


class ApproveAgentOp:
    """Approve (or re-scope) an agent key for the signing account: `markets` (comma list, None for every one),
    `operations` (comma list of place, cancel, replace), a notional `cap` per order in its market's quote asset
    (None: no cap) and an `expires` block time in ms (None: until revoked)."""

    __slots__ = ("agent", "markets", "operations", "cap", "expires")
    name = "approve_agent"

    def __init__(self, agent: str, markets: str | None, operations: str, cap: str | None, expires: int | None) -> None:
        self.agent, self.markets, self.operations, self.cap, self.expires = agent, markets, operations, cap, expires

    def line(self) -> str:
        return (f"approve_agent {self.agent} {self.markets or '-'} {self.operations} {self.cap or '-'} "
                f"{'-' if self.expires is None else self.expires}")

    def wire(self) -> Wire:
        return ["approve_agent", self.agent, self.markets, self.operations, self.cap, self.expires]

    def as_json(self) -> ApproveAgentJson:
        return {"op": "approve_agent", "agent": self.agent, "markets": self.markets, "operations": self.operations,
                "cap": self.cap, "expires": self.expires}

    @classmethod
    def parse(cls, agent: Unchecked, markets: Unchecked, operations: Unchecked, cap: Unchecked,
              expires: Unchecked) -> "ApproveAgentOp":
        if markets is not None:
            names = markets.split(",") if isinstance(markets, str) else []
            _need(0 < len(names) <= MAX_AGENT_MARKETS and len(set(names)) == len(names)
                  and all(_MARKET.fullmatch(name) for name in names), "invalid_markets",
                  f"markets is a comma list of 1 to {MAX_AGENT_MARKETS} distinct markets, or null for all", "markets")
        kinds = operations.split(",") if isinstance(operations, str) else []
        _need(bool(kinds) and len(set(kinds)) == len(kinds) and all(k in AGENT_OPERATIONS for k in kinds),
              "invalid_operations", f"operations is a comma list of {', '.join(AGENT_OPERATIONS)}", "operations")
        _need(expires is None or _timestamp(expires), "invalid_expires",
              "expires is a positive integer of milliseconds since the Unix epoch, or null", "expires")
        return cls(_text(agent, _ACCOUNT_HEX, "agent"), cast("str | None", markets), cast("str", operations),
                   _optional(cap, lambda v: _decimal(v, "cap")), cast("int | None", expires))


class RevokeAgentOp:
    """Revoke an agent key of the signing account: its transactions are refused from this block on."""

    __slots__ = ("agent",)
    name = "revoke_agent"

    def __init__(self, agent: str) -> None:
        self.agent = agent

    def line(self) -> str:
        return f"revoke_agent {self.agent}"

    def wire(self) -> Wire:
        return ["revoke_agent", self.agent]

    def as_json(self) -> RevokeAgentJson:
        return {"op": "revoke_agent", "agent": self.agent}

    @classmethod
    def parse(cls, agent: Unchecked) -> "RevokeAgentOp":
        return cls(_text(agent, _ACCOUNT_HEX, "agent"))


class AtomicOp:
    """Marks a batch: the transaction's other operations (new, cancel, replace only) run all or none (the state
    machine judges every one of them before any runs)."""

    __slots__ = ()
    name = "atomic"

    def line(self) -> str:
        return "atomic"

    def wire(self) -> Wire:
        return ["atomic"]

    def as_json(self) -> AtomicJson:
        return {"op": "atomic"}

    @classmethod
    def parse(cls) -> "AtomicOp":
        return cls()


Op = Union[NewOrderOp, CancelOp, CancelAllOp, ScheduleCancelOp, ReplaceOp, GrantOp, ApproveAgentOp, RevokeAgentOp,
           AtomicOp]
# each op's parser and the numbers of fields its wire list may have (a new order's `until` is written only when set)
_OP_ARITY: dict[str, tuple[Callable[..., Op], tuple[int, ...]]] = {
    "new": (NewOrderOp.parse, (6, 7, 8, 9, 10)), "cancel": (CancelOp.parse, (2,)), "cancel_all": (CancelAllOp.parse, (2,)),
    "schedule_cancel": (ScheduleCancelOp.parse, (1,)), "replace": (ReplaceOp.parse, (4,)), "grant": (GrantOp.parse, (3,)),
    "approve_agent": (ApproveAgentOp.parse, (5,)), "revoke_agent": (RevokeAgentOp.parse, (1,)),
    "atomic": (AtomicOp.parse, (0,))}
_JSON_FIELDS = {"new": ("market", "side", "type", "price", "qty", "stp", "until", "client_id", "trigger_price",
                        "reduce_only"), "cancel": ("market", "order_id"),
                "cancel_all": ("market", "side"), "schedule_cancel": ("at",),
                "replace": ("market", "order_id", "price", "qty"), "grant": ("account", "asset", "limit"),
                "approve_agent": ("agent", "markets", "operations", "cap", "expires"), "revoke_agent": ("agent",),
                "atomic": ()}


def parse_op(item: Unchecked) -> Op:
    """An operation from its wire list (`["new", market, side, type, price, qty, stp]`, ...)."""
    _need(type(item) in (list, tuple) and len(item) >= 1, "invalid_op", "an operation is a list", "ops")
    spec = _OP_ARITY.get(item[0]) if type(item[0]) is str else None
    if spec is None or len(item) - 1 not in spec[1]:
        raise InvalidTx("invalid_op", "unknown operation or wrong arity", "ops")
    if len(item) > 7:
        _need(item[-1] is not None, "invalid_op", "the last optional field written on the wire is set", "ops")
    return spec[0](*item[1:])


def op_from_json(item: Unchecked) -> Op:
    """An operation from its JSON object (`{"op": "new", "market": ..., ...}`); missing optionals are null."""
    _need(isinstance(item, dict), "invalid_op", "each operation is a JSON object", "ops")
    name = item.get("op", "new")
    fields = _JSON_FIELDS.get(name) if type(name) is str else None
    if fields is None:
        raise InvalidTx("invalid_op", f"op must be one of {', '.join(_JSON_FIELDS)}", "op")
    values = [item.get(f) for f in fields]
    if name == "new":         # the wire form without what is not set (NewOrderOp.wire)
        if values[-1] is False:
            values[-1] = None
        while len(values) > 6 and values[-1] is None:
            values.pop()
    return parse_op([name, *values])


class SignedTx:
    """One account's signed transaction. Immutable once built; `id` and `signed_bytes` are cached."""

    __slots__ = ("chain_id", "account", "nonce", "expires", "ops", "sig", "signed_bytes", "id", "acting_for")

    def __init__(self, chain_id: str, account: bytes, nonce: str, expires: int, ops: tuple[Op, ...], sig: bytes,
                 acting_for: bytes | None = None) -> None:
        self.chain_id, self.account, self.nonce, self.expires, self.ops, self.sig = \
            chain_id, account, nonce, expires, ops, sig
        self.acting_for = acting_for     # an agent's transaction: the account it acts for (the signer is the agent)
        self.signed_bytes = signed_bytes(chain_id, account, nonce, expires, ops, acting_for)
        self.id = sha256(self.signed_bytes).hex()[:32]

    def order_id(self, index: int) -> str:
        return order_id(self.id, index)

    @property
    def account_hex(self) -> str:
        return self.account.hex()

    @property
    def owner(self) -> bytes:
        """The account the transaction acts on: the one it is `for`, else the signer's."""
        return self.account if self.acting_for is None else self.acting_for

    def signature_valid(self) -> bool:
        return verify(self.account, self.sig, self.signed_bytes)

    def wire(self) -> Wire:
        """Six items; an agent's transaction adds the account it acts for as a seventh."""
        wire = [self.chain_id, self.account, self.nonce, self.expires, [op.wire() for op in self.ops], self.sig]
        return wire if self.acting_for is None else [*wire, self.acting_for]

    def as_json(self) -> SignedTxJson:
        view: SignedTxJson = {"chain_id": self.chain_id, "account": self.account.hex(), "nonce": self.nonce,
                              "expires": self.expires, "ops": [op.as_json() for op in self.ops], "sig": self.sig.hex()}
        if self.acting_for is not None:
            view["for"] = self.acting_for.hex()  # type: ignore[typeddict-unknown-key]
        return view

    @classmethod
    def from_wire(cls, data: Unchecked) -> "SignedTx":
        """Parse a transaction received from anyone (shape only; call `signature_valid` too)."""
        _need(type(data) in (list, tuple) and len(data) in (6, 7), "invalid_tx",
              "a transaction is a 6-item list (7 for an agent's)")
        chain_id, account, nonce, expires, ops, sig = data[:6]
        _need(type(account) is bytes and len(account) == PUBLIC_KEY_BYTES, "invalid_account",
              "account is a 32-byte Ed25519 public key", "account")
        _need(type(sig) is bytes and len(sig) == SIGNATURE_BYTES, "invalid_sig", "sig is 64 bytes", "sig")
        acting_for = data[6] if len(data) == 7 else None
        _need(acting_for is None or (type(acting_for) is bytes and len(acting_for) == PUBLIC_KEY_BYTES
                                     and acting_for != account), "invalid_for",
              "for is the 32-byte account an agent acts for (not the agent's own)", "for")
        return cls(_text(chain_id, _CHAIN_ID, "chain_id"), account, _text(nonce, _NONCE, "nonce"),
                   _checked_expires(expires), _checked_ops(ops, parse_op), sig, acting_for)

    @classmethod
    def from_json(cls, data: Unchecked) -> "SignedTx":
        """Parse the JSON form an external client posts (hex for account and sig)."""
        _need(isinstance(data, dict), "invalid_tx", "a signed transaction is a JSON object")
        account = _hex_bytes(data.get("account"), PUBLIC_KEY_BYTES, "account")
        sig = _hex_bytes(data.get("sig"), SIGNATURE_BYTES, "sig")
        acting_for = None if data.get("for") is None else _hex_bytes(data.get("for"), PUBLIC_KEY_BYTES, "for")
        _need(acting_for != account, "invalid_for", "for names the account an agent acts for, not the agent's own",
              "for")
        return cls(_text(data.get("chain_id"), _CHAIN_ID, "chain_id"), account, _text(data.get("nonce"), _NONCE, "nonce"),
                   _checked_expires(data.get("expires")), _checked_ops(data.get("ops"), op_from_json), sig, acting_for)

    def __repr__(self) -> str:
        return f"SignedTx({self.id} account={self.account.hex()[:12]} ops={len(self.ops)})"


def _timestamp(value: Unchecked) -> bool:
    return type(value) is int and 0 < value <= MAX_EXPIRES


def _checked_expires(value: Unchecked) -> int:
    _need(type(value) is int and 0 < value <= MAX_EXPIRES, "invalid_expires",
          "expires is a positive integer of milliseconds since the Unix epoch", "expires")
    return cast("int", value)


def _checked_ops(items: Unchecked, parse: Callable[[Unchecked], Op]) -> tuple[Op, ...]:
    _need(type(items) in (list, tuple) and 1 <= len(items) <= MAX_OPS, "invalid_ops",
          f"ops is a list of 1 to {MAX_OPS} operations", "ops")
    ops = tuple(parse(item) for item in items)
    if any(type(op) is AtomicOp for op in ops):
        _need(type(ops[0]) is AtomicOp and len(ops) > 1 and all(type(op) in _BATCHED for op in ops[1:]),
              "invalid_atomic", "atomic comes first, followed by new, cancel and replace operations only", "ops")
    return ops


_BATCHED = (NewOrderOp, CancelOp, ReplaceOp)


def _hex_bytes(value: Unchecked, size: int, field: str) -> bytes:
    _need(type(value) is str and len(value) == 2 * size, f"invalid_{field}", f"{field} is {2 * size} hex characters",
          field)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidTx(f"invalid_{field}", f"{field} is not hex", field) from None


def signed_bytes(chain_id: str, account: bytes, nonce: str, expires: int, ops: tuple[Op, ...] | list[Op],
                 acting_for: bytes | None = None) -> bytes:
    lines = [DOMAIN, f"chain={chain_id}", f"account={account.hex()}", f"nonce={nonce}", f"expires={expires}"]
    if acting_for is not None:
        lines.insert(3, f"for={acting_for.hex()}")
    lines.extend(op.line() for op in ops)
    return "\n".join(lines).encode()


def order_id(tx_id: str, index: int) -> str:
    return f"{tx_id[:30]}{index:02x}"


def sign_tx(sign: Callable[[bytes], bytes], account: bytes, chain_id: str, nonce: str, expires: int,
            ops: Sequence[Op], acting_for: bytes | None = None) -> SignedTx:
    """Build and sign a transaction (raises InvalidTx if a field breaks the format); with `acting_for`, an agent
    key signs for that account."""
    ops = tuple(ops)
    wire: list[object] = [chain_id, account, nonce, expires, [op.wire() for op in ops], bytes(SIGNATURE_BYTES)]
    probe = SignedTx.from_wire(wire if acting_for is None else [*wire, acting_for])
    return SignedTx(probe.chain_id, probe.account, probe.nonce, probe.expires, probe.ops,
                    sign(probe.signed_bytes), probe.acting_for)
