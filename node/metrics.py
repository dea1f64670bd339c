"""Prometheus exposition for GET /metrics, read from live counters at scrape time.

prometheus-client does the text format and escaping; a custom collector reads our counters
when scraped, so the hot paths keep plain ints and pay nothing per message.
"""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class NodeCollector:
    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        peers = node.peers
        status = peers.status()
        yield GaugeMetricFamily("exchange_node_peers_connected", "Open peer links", value=status["peers_connected"])
        yield GaugeMetricFamily("exchange_node_known_addresses", "Addresses in the address book",
                                value=status["known_addresses"])
        counters = CounterMetricFamily("exchange_node_p2p_events", "Peer-layer events", labels=["event"])
        for name, value in status["counters"].items():
            counters.add_metric([name], value)
        yield counters
        reasons = CounterMetricFamily("exchange_node_link_closes", "Links closed, by reason", labels=["reason"])
        for reason, value in status["close_reasons"].items():
            reasons.add_metric([reason], value)
        yield reasons
        discovery = GaugeMetricFamily("exchange_node_discovery", "Discovery counts per strategy",
                                      labels=["strategy", "what"])
        for name, stats in node.discovery.stats().items():
            for what in ("found", "dialled", "connected"):
                discovery.add_metric([name, what], stats[what])
        yield discovery
        for extra in getattr(node, "metric_sources", []):
            yield from extra()


def render_metrics(node: Any) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return generate_latest(registry), CONTENT_TYPE_LATEST
