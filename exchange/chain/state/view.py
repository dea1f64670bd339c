"""CoreBasics: what every part of the chain core reads of it (the chain it is on, the core's settings, the
replicated state, signature checks) and the one thing every part may write, the shared `counters`. Each
part extends it with a Protocol of its own naming the rest it uses."""
from __future__ import annotations

from typing import Protocol

from exchange.chain.config import CoreConfig
from exchange.chain.state.chainstate import ChainState


class CoreBasics(Protocol):
    @property
    def chain_id(self) -> str: ...

    @property
    def config(self) -> CoreConfig: ...

    @property
    def state(self) -> ChainState: ...

    @property
    def counters(self) -> dict[str, int]: ...

    def verify(self, key: bytes, sig: bytes, data: bytes) -> bool: ...
