"""Prometheus exposition for GET /metrics, read from live counters at scrape time.

prometheus-client does the text format and escaping; a custom collector reads our counters
when scraped, so the hot paths keep plain ints and pay nothing per message.

Naming follows the Prometheus conventions: base units (`_seconds`), cumulative counts are counters
named `_total`, and one metric never mixes a total with its outcomes. The components keep their
counts in plain dicts (`{"requests": 9, "succeeded": 7, "failed": 2}`); `split_counters` turns such
a dict into metrics: keys that partition one quantity become one counter with a label (per
`CounterGroup`), every other key becomes a counter of its own, so a counter added later is exposed
correctly without touching this file.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Protocol, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from config.version import VERSION

if TYPE_CHECKING:
    from node.api.base import ApiNode

# A component's counts as its stats() reports them: numbers by key, beside which some keep other values (a
# time, a text, a nested view) that split_counters passes over by their type.
Counts = Mapping[str, Any]


class Histogram(Protocol):
    """What histogram_family reads of a histogram (p2p/rpc/metrics.py's LatencyHistogram is one)."""

    sum: float

    def cumulative(self) -> list[tuple[str, int]]: ...


@dataclass(frozen=True)
class CounterGroup:
    """Counter keys that partition one quantity, exposed as `name` with `label` = `members[key]`."""

    name: str
    documentation: str
    label: str
    members: Mapping[str, str]


@dataclass(frozen=True)
class CounterNames:
    """How one component's counter dict is exposed: groups, keys left out (derivable), and the prefix
    and help of the counters made from any other key."""

    prefix: str
    what: str
    groups: Sequence[CounterGroup] = ()
    skip: frozenset[str] = field(default_factory=frozenset)


def split_counters(names: CounterNames, counts: Counts,
                   labels: Sequence[tuple[str, str]] = ()) -> Iterator[Metric]:
    """Counter families for `counts` (see the module docstring); `labels` are added to every sample."""
    label_names = [name for name, _ in labels]
    label_values = [value for _, value in labels]
    grouped: set[str] = set()
    for group in names.groups:
        family = CounterMetricFamily(group.name, group.documentation, labels=label_names + [group.label])
        for key, label_value in group.members.items():
            family.add_metric(label_values + [label_value], counts.get(key, 0))
        grouped.update(group.members)
        yield family
    for key, value in counts.items():
        if key in grouped or key in names.skip or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        family = CounterMetricFamily(f"{names.prefix}_{key}_total", f"{names.what}: {key.replace('_', ' ')}",
                                     labels=label_names)
        family.add_metric(label_values, value)
        yield family


def labelled_counter(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    """One counter whose samples are `counts` by `label` (the keys must partition what is counted)."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in counts.items():
        family.add_metric([key], value)
    return family


def histogram_family(name: str, documentation: str, label_names: Sequence[str],
                     rows: Iterable[tuple[Sequence[str], Histogram]]) -> HistogramMetricFamily:
    """A histogram family from (label values, LatencyHistogram) rows."""
    family = HistogramMetricFamily(name, documentation, labels=list(label_names))
    for values, histogram in rows:
        family.add_metric(list(values), histogram.cumulative(), histogram.sum)
    return family


PEER_COUNTERS = CounterNames("exchange_node_p2p", "Peer layer")
DISCOVERY_EXTRAS = CounterNames("exchange_node_discovery", "Discovery",
                                skip=frozenset({"found", "dialled", "connected", "last_error_at"}))


class NodeCollector:
    def __init__(self, node: ApiNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        build = GaugeMetricFamily("exchange_node_build_info", "Always 1; the labels say what is running",
                                  labels=["version", "python"])
        build.add_metric([VERSION, platform.python_version()], 1)
        yield build
        status = node.peers.status()
        yield GaugeMetricFamily("exchange_node_peers_connected", "Open peer links", value=status["peers_connected"])
        yield GaugeMetricFamily("exchange_node_known_addresses", "Addresses in the address book",
                                value=status["known_addresses"])
        yield from split_counters(PEER_COUNTERS, dict(status["counters"], unknown_messages=status["unknown_messages"]))
        yield CounterMetricFamily("exchange_node_p2p_read_turns_total", "Turns links waited for while this node "
                                  "was behind reading them (shared by network)", value=status["read_turns"]["given"])
        yield labelled_counter("exchange_node_p2p_connections_closed_total",
                               "Connections closed (handshaking or open), by reason", "reason", status["close_reasons"])
        yield from discovery_metrics(node.discovery.stats())
        for extra in node.metric_sources:
            yield from extra()


def discovery_metrics(stats: Mapping[str, Counts]) -> Iterator[Metric]:
    found = CounterMetricFamily("exchange_node_discovery_found_total", "Addresses a strategy found",
                                labels=["strategy"])
    dialled = CounterMetricFamily("exchange_node_discovery_dials_total", "Dials of addresses a strategy found",
                                  labels=["strategy"])
    linked = CounterMetricFamily("exchange_node_discovery_links_total",
                                 "Links opened to addresses a strategy found", labels=["strategy"])
    for strategy, row in stats.items():
        found.add_metric([strategy], row["found"])
        dialled.add_metric([strategy], row["dialled"])
        linked.add_metric([strategy], row["connected"])
    yield from (found, dialled, linked)
    for strategy, row in stats.items():
        extras = CounterNames(f"{DISCOVERY_EXTRAS.prefix}_{strategy}", f"Discovery ({strategy})",
                              skip=DISCOVERY_EXTRAS.skip)
        yield from split_counters(extras, row)


def render_metrics(node: ApiNode) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)      # process_cpu_seconds_total, process_resident_memory_bytes, ...
    return generate_latest(registry), CONTENT_TYPE_LATEST
