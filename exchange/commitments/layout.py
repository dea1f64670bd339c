"""Where each part of the exchange state sits in the committed maps: the keys and value encodings that the state
machine writes and a light client reads, in one place so the two can never disagree.

    state root      1-byte keys: MARKETS -> markets root, ORDERS -> orders root, ACCOUNTS -> accounts root
    markets         SHA-256(symbol) -> [levels root, book root, block trades root]
      levels        side (0 bids, 1 asks) | price key (8) -> [lots, orders]
      book          side | price key | created key (height 6, tx index 3, op index 1) -> [order id, account, lots left]
      block trades  trade index among the market's trades of the block (4) -> the trade row
    orders          SHA-256(order id) -> [account, market, side, type, price, lots, lots left, status, reason]
    accounts        SHA-256(account) -> [open orders root, fills root, positions root]
      open orders   SHA-256(order id) -> the order's record (as in `orders`)
      fills         2^64 - 1 - height (8) | SHA-256(trade id)[:8] -> [market, *the trade row]: newest first
      positions     SHA-256(asset) -> amount (signed decimal text in the asset's smallest units: it may pass 64 bits)

The price key is the price for asks and 2^64 - 1 - price for bids, so on either side the best level sorts first
and "the top N levels" is a first-N proof. Values are msgpack; a record is a list so its bytes are canonical.
"""
from __future__ import annotations

from hashlib import sha256
from typing import cast

import msgpack

MARKETS, ORDERS, ACCOUNTS = b"\x01", b"\x02", b"\x03"
TOP_KEY_BYTES = 1
NAME_KEY_BYTES = 32            # markets, orders, accounts, open orders, positions
LEVEL_KEY_BYTES = 9
BOOK_KEY_BYTES = 19
TRADE_KEY_BYTES = 4
FILL_KEY_BYTES = 16
BIDS, ASKS = 0, 1
_MAX64 = (1 << 64) - 1


def pack(value: object) -> bytes:
    return cast(bytes, msgpack.packb(value, use_bin_type=True))


def name_key(name: str) -> bytes:
    return sha256(name.encode()).digest()


def price_key(side: int, price: int) -> bytes:
    return bytes([side]) + (price if side == ASKS else _MAX64 - price).to_bytes(8, "big")


def side_range(side: int, key_bytes: int) -> tuple[bytes, bytes]:
    """The first and last possible keys of one side of a levels or book map."""
    rest = key_bytes - 1
    return bytes([side]) + bytes(rest), bytes([side]) + b"\xff" * rest


def price_of(key: bytes) -> int:
    """The price a levels or book key names."""
    raw = int.from_bytes(key[1:9], "big")
    return raw if key[0] == ASKS else _MAX64 - raw


def book_key(side: int, price: int, created: tuple[int, int, int]) -> bytes:
    height, tx_index, op_index = created
    return price_key(side, price) + height.to_bytes(6, "big") + tx_index.to_bytes(3, "big") + bytes([op_index])


def trade_key(index: int) -> bytes:
    return index.to_bytes(TRADE_KEY_BYTES, "big")


def fill_key(height: int, trade_id: str) -> bytes:
    return (_MAX64 - height).to_bytes(8, "big") + sha256(trade_id.encode()).digest()[:8]


def fills_range() -> tuple[bytes, bytes]:
    return bytes(FILL_KEY_BYTES), b"\xff" * FILL_KEY_BYTES


def roots_of(value: bytes) -> tuple[bytes, bytes, bytes]:
    """The three roots of a market's or an account's record; raises ValueError when it is not one."""
    try:
        roots = msgpack.unpackb(value, raw=False)
    except Exception:  # noqa: BLE001 - a node's bytes: any failure to parse is one refusal
        raise ValueError("not msgpack") from None
    if not (isinstance(roots, list) and len(roots) == 3 and all(isinstance(r, bytes) and len(r) == 32 for r in roots)):
        raise ValueError("not three 32-byte roots")
    return roots[0], roots[1], roots[2]


def unpack(value: bytes) -> object:
    try:
        return msgpack.unpackb(value, raw=False)
    except Exception:  # noqa: BLE001 - a node's bytes: any failure to parse is one refusal
        raise ValueError("not msgpack") from None
