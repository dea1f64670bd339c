"""The names the client gives the JSON it reads from the node and the transactions it builds.

The client is its own package: it names these itself and imports nothing of the node's.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, TypedDict

# A JSON value the node answered, as aiohttp decodes it: its shape is the API reference's (docs/api.md), the
# caller reads the fields it needs, so it has no static type here.
Json = Any
# A JSON object the node answered (an order, a trade, a book, /status, ...), read field by field.
JsonObject = dict[str, Any]
# One operation in its JSON form (docs/signed-orders.md): `op` names its kind, the other fields are strings,
# integers (`until`, `at`) or None, as op_line writes them into the signed text.
Op = Mapping[str, str | int | None]


class SignedTx(TypedDict):
    """A signed transaction as the `{"signed": ...}` body carries it."""

    chain_id: str
    account: str
    nonce: str
    expires: int
    ops: Sequence[Op]
    sig: str
