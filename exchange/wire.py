"""The wire form of the exchange's and the chain's values: what `to_wire` gives and `from_wire` takes.

A value crosses the network and the disk as a msgpack array of plain values. Its elements are Any because
msgpack carries no static type: each `from_wire` checks the shape it expects (raising `Malformed` or
`InvalidTx`) before anything reads it, so typed values start there.
"""
from __future__ import annotations

from typing import Any

# A value's wire form, a msgpack array: its elements have no static type until its `from_wire` checks them.
Wire = list[Any]
# A decoded msgpack or JSON value (or an element of one) not yet checked: the `from_wire`, `from_json` or
# `parse` that receives it checks its type and shape before anything else reads it.
Unchecked = Any
