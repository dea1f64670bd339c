"""GET /metrics from a real node follows the Prometheus conventions: base units, counters named
_total and typed counter, no metric mixing a total with its outcomes, histograms for RPC and
finality latency, process_* and build info."""
from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from config.version import VERSION

FAST = {"heartbeat_interval": 0.2}
# Words that name a total next to its own outcomes (e.g. {event="requests"} beside {event="failed"}).
TOTAL_WORDS = {"requests", "sent", "total", "dials", "received", "all"}


def scrape(node) -> dict:
    text = urllib.request.urlopen(node.api_url + "/metrics", timeout=10).read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict, name: str, **labels: str) -> float:
    for family in families.values():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError(f"{name} {labels}")


def test_metrics_follow_prometheus_conventions(cluster):
    a, b = cluster.chain(2, seat_rule="any", **FAST)
    b.new_accounts('buy', 'sell')
    for side, price in (("buy", "100"), ("sell", "100")):
        status, _ = b.api("POST", "/orders?wait=5", {"market": "BTC-USD", "side": side, "price": price, "qty": "1",
                                                     "account": side})
        assert status == 201
    assert b.api("POST", "/rpc/ping", {})[0] == 200
    families = scrape(b)
    for name, family in families.items():
        assert "_ms" not in name, name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        if family.type == "gauge":
            assert not name.endswith("_total"), f"{name}: a cumulative count exposed as a gauge"
        for sample in family.samples:
            for label, label_value in sample.labels.items():
                assert not (family.type == "counter" and label in ("event", "outcome", "result")
                            and label_value in TOTAL_WORDS), f"{sample.name}{{{label}={label_value}}}"
    assert value(families, "exchange_node_build_info", version=VERSION) == 1
    assert value(families, "process_resident_memory_bytes") > 1e6
    assert value(families, "process_cpu_seconds_total") > 0
    assert families["exchange_node_rpc_attempt_duration_seconds"].type == "histogram"
    assert value(families, "exchange_node_rpc_attempt_duration_seconds_count", service="ping", outcome="ok") == 1
    assert families["exchange_node_finality_duration_seconds"].type == "histogram"
    assert value(families, "exchange_node_finality_duration_seconds_count") == 2
    assert value(families, "exchange_node_rpc_requests_total", outcome="succeeded") == 1
    assert value(families, "exchange_node_rpc_peer_latency_seconds", service="ping", peer=a.node_id) < 1.0
    assert value(families, "exchange_node_router_messages_sent_total", type="chain_vote") >= 2
    assert value(families, "exchange_node_chain_height") >= 2 and value(families, "exchange_node_chain_validators") == 2
    assert value(families, "exchange_node_chain_quorum") == 1
    assert families["exchange_node_chain_blocks"].type == "counter"
    assert families["exchange_node_p2p_links_opened"].type == "counter"
    assert families["exchange_node_discovery_found"].type == "counter"
