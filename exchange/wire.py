"""The wire form of the exchange's and the chain's values: what `to_wire` gives and `from_wire` takes.

A value crosses the network and the disk as a msgpack array of plain values. Its elements are Any because
msgpack carries no static type: each `from_wire` checks the shape it expects (raising `Malformed` or
`InvalidTx`) before anything reads it, so typed values start there.
"""
from __future__ import annotations

from typing import Any

Wire = list[Any]
