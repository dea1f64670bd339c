"""The gauges the alert rules read (node/ops_metrics.py): a real one-validator chain on FaultyFS for the disk
error and the mempool bounds, a hand-made state for the validators' absence."""
from __future__ import annotations

import asyncio
import types
from typing import cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exchange.chain.state.chainstate import ChainState
from exchange.crypto import SigningKey, node_id_for
from node.ops_metrics import STORAGE_KINDS, ops_metrics, validator_metrics
from tests.faultyfs import FaultyFS
from tests.unit.storage.chain_node import ChainNode, Record


def samples(families) -> dict[tuple[str, tuple], float]:
    """{(name, sorted labels): value} as a scrape would read them (through the text format)."""
    families = list(families)

    class Source:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Source())
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_disk_full_sets_its_kind_and_the_mempool_bounds_are_exported():
    fs = FaultyFS()

    async def run() -> tuple[dict, dict, dict]:
        node = await ChainNode.boot(fs, Record())
        healthy = samples(ops_metrics(node.service))
        fs.set_capacity(fs.used_bytes() + 64)           # the next outbox add finds the disk full
        outcome, exc = await node.place(1)
        assert outcome == "failed" and exc.kind == "no_space", (outcome, exc)
        full = samples(ops_metrics(node.service))
        fs.set_capacity(None)
        await node.place(2)                             # a write that works clears the outbox error
        node.step(0.3)
        again = samples(ops_metrics(node.service))
        await node.stop()
        return healthy, full, again

    healthy, full, again = asyncio.run(run())
    for kind in STORAGE_KINDS:
        assert healthy[("exchange_node_storage_error", (("kind", kind),))] == 0.0
        assert again[("exchange_node_storage_error", (("kind", kind),))] == 0.0
        assert full[("exchange_node_storage_error", (("kind", kind),))] == (1.0 if kind == "no_space" else 0.0)
    assert healthy[("exchange_node_chain_mempool_capacity_transactions", ())] == 50_000
    assert healthy[("exchange_node_chain_mempool_capacity_bytes", ())] == 64 * 1024 * 1024
    assert healthy[("exchange_node_chain_mempool_bytes", ())] == 0


def test_a_validator_silent_for_more_than_two_heights_is_absent_by_block_time():
    here, late, gone = (SigningKey(bytes([n]) * 32).public_key for n in (1, 2, 3))
    state = types.SimpleNamespace(
        height=100, time_ms=500_000, validators=types.SimpleNamespace(keys=[here, late, gone]),
        last_seen={here: (100, 500_000), late: (98, 499_000), gone: (90, 470_500)})
    got = samples(validator_metrics(cast(ChainState, state)))     # only what validator_metrics reads
    absent = {node_id_for(key): got[("exchange_node_chain_validator_absent_seconds", (("validator", node_id_for(key)),))]
              for key in (here, late, gone)}
    assert absent == {node_id_for(here): 0.0, node_id_for(late): 0.0, node_id_for(gone): 29.5}
    assert got[("exchange_node_chain_validator_last_signed_height", (("validator", node_id_for(gone)),))] == 90
