"""Shared fixtures: `cluster` starts real exchange-node processes and always cleans them up."""
from __future__ import annotations

import pytest

from tests.harness import Cluster


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
