"""Fixtures the state-machine tests share: a chain driven block by block and a transaction maker."""
from __future__ import annotations

import pytest

from tests.unit.chain.state_helpers import Chain, TxMaker


@pytest.fixture
def chain() -> Chain:
    return Chain()


@pytest.fixture
def make() -> TxMaker:
    return TxMaker()
