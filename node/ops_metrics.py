"""Gauges the alert rules need and the chain's own metrics do not carry (packaging/prometheus/alerts.rules.yml).

- `exchange_node_storage_error{kind}`: 1 for the kind of the storage error this node is stuck on (it cannot
  write a consensus record, or its last outbox write failed), 0 for every other kind; all 0 when writes work.
  Every kind is always exported, so an alert can test `== 1` and a dashboard can stack them.
- `exchange_node_chain_mempool_bytes` and the pool's bounds, `exchange_node_chain_mempool_capacity_transactions`
  and `exchange_node_chain_mempool_capacity_bytes`: a full pool refuses new transactions (`mempool_full`);
  `exchange_node_chain_mempool_refused_total{reason}` (also a sender's or an account's share used up),
  `exchange_node_chain_mempool_evicted_total` and `exchange_node_chain_mempool_lanes` (senders waiting).
- `exchange_node_chain_validator_absent_seconds{validator}`: per member of the current set, block time since the
  last block it signed, once it is more than two heights behind (what `GET /validators` shows as `absent_s`);
  `exchange_node_chain_validator_last_signed_height{validator}`: that height.

Read at scrape time from the chain service; nothing here is on a hot path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exchange.crypto import node_id_for
from storage import errors as storage_errors

if TYPE_CHECKING:
    from exchange.chain.state.chainstate import ChainState
    from exchange.chain.service import ChainService

STORAGE_KINDS = (storage_errors.NO_SPACE, storage_errors.READ_ONLY, storage_errors.IO_ERROR,
                 storage_errors.PERMISSION, storage_errors.NOT_FOUND, storage_errors.DAMAGED,
                 storage_errors.MISSING, storage_errors.FAILED, storage_errors.LOCKED, storage_errors.CLOSED)
ABSENT_AFTER_HEIGHTS = 2     # as seats_view: a member one or two blocks behind is just late


def ops_metrics(chain: ChainService) -> Iterator[Metric]:
    problem = chain.storage_problem
    current = problem.kind if problem is not None else None
    storage = GaugeMetricFamily("exchange_node_storage_error",
                                "1 for the kind of storage error this node cannot write past (0 for the others)",
                                labels=["kind"])
    kinds = STORAGE_KINDS if current is None or current in STORAGE_KINDS else STORAGE_KINDS + (current,)
    for kind in kinds:
        storage.add_metric([kind], 1.0 if kind == current else 0.0)
    yield storage
    core = chain.core
    if core is None:
        return
    mempool = core.mempool
    yield GaugeMetricFamily("exchange_node_chain_mempool_bytes", "Encoded bytes of the transactions waiting",
                            value=mempool.bytes)
    yield GaugeMetricFamily("exchange_node_chain_mempool_capacity_transactions",
                            "Transactions the mempool holds at most (then it refuses: mempool_full)",
                            value=mempool.max_txs)
    yield GaugeMetricFamily("exchange_node_chain_mempool_capacity_bytes",
                            "Bytes the mempool holds at most (then it refuses: mempool_full)", value=mempool.max_bytes)
    refused = CounterMetricFamily("exchange_node_chain_mempool_refused",
                                  "Transactions the mempool refused, by reason (a sender's or account's share "
                                  "used up, or the pool full)", labels=["reason"])
    for reason, count in mempool.refused.items():
        refused.add_metric([reason], count)
    yield refused
    yield CounterMetricFamily("exchange_node_chain_mempool_evicted",
                              "Transactions evicted from the heaviest lane to make room for a lighter sender",
                              value=mempool.evicted)
    yield GaugeMetricFamily("exchange_node_chain_mempool_lanes", "Senders (lanes) with transactions waiting",
                            value=len(mempool.lanes()))
    yield from validator_metrics(core.state)


def validator_metrics(state: ChainState) -> Iterator[Metric]:
    """Per validator of `state.validators`: how long it has not signed (block time) and its last signed height."""
    absent = GaugeMetricFamily("exchange_node_chain_validator_absent_seconds",
                               "Block time since the validator last signed, once more than 2 heights behind (else 0)",
                               labels=["validator"])
    last = GaugeMetricFamily("exchange_node_chain_validator_last_signed_height",
                             "Height of the last block the validator signed", labels=["validator"])
    for key in state.validators.keys:
        seen_height, seen_ms = state.last_seen.get(key, (0, 0))
        behind = state.height - seen_height > ABSENT_AFTER_HEIGHTS
        node_id = node_id_for(key)
        absent.add_metric([node_id], max(0.0, state.time_ms - seen_ms) / 1000 if behind else 0.0)
        last.add_metric([node_id], seen_height)
    yield absent
    yield last
