"""Fixtures shared by the p2p unit tests."""
from __future__ import annotations

import pytest

from tests.fake_grape import FakeGrape


@pytest.fixture
async def grape():
    """A Grape stand-in on a loopback port, for the Grenache client, discovery and message path."""
    async with FakeGrape() as fake:
        yield fake
