"""Operator polish on real processes: `--help` shows no Python reprs, the start-up line names the
web console, a negative quantity is the API's to refuse, a production node offers no test service, and
`last seen` of a connected peer follows its frames."""
from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ROOT, wait_until
from tests.unit.test_alert_rules import METRIC, RULES

REPRS = re.compile(r"PosixPath\(|default \(\)|default None|default (True|False)|default '|\bVALUE\b")


def help_text(*args: str) -> str:
    shown = subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_help_shows_defaults_and_placeholders_as_typed():
    for args in (["start", "--help"], ["--help"], ["order", "--help"]):
        text = " ".join(help_text(*args).split())
        assert not REPRS.search(text), (args, REPRS.search(text))
    start = " ".join(help_text("start", "--help").split())
    assert "--api-port PORT" in start and "--discovery-mdns true|false" in start and "default none]" in start
    assert not re.search(r"e\.g\.(\.\.\.)?$", help_text("--help"), re.M)


def test_console_line_negative_qty_no_test_service_and_last_seen(cluster):
    a, b = cluster.chain(2, heartbeat_interval=0.2)
    console = f"web console at {a.api_url}/"
    assert console in a.log_tail(200)
    page = urllib.request.urlopen(a.api_url + "/", timeout=10)
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]

    refused = a.cli("order", "buy", "BTC-USD", "-1", "--price", "100")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "invalid_qty" in refused.stderr and "(field qty)" in refused.stderr, refused.stderr   # the API's answer
    assert "No such option" not in refused.stderr

    scraped = urllib.request.urlopen(a.api_url + "/metrics", timeout=10).read().decode()
    exported = set()
    for family in text_string_to_metric_families(scraped):
        exported |= {family.name, f"{family.name}_total"} | {sample.name for sample in family.samples}
    missing = set(METRIC.findall(RULES.read_text())) - exported
    assert not missing, f"the alert rules read metrics this node does not export: {sorted(missing)}"

    services = a.get("/routing")["services"]
    assert b.node_id in services["ping"]["providers"]
    assert "test.echo" not in services

    def last_seen_moves() -> bool:
        row = next(p for p in a.peers() if p["node_id"] == b.node_id)
        return row["status"] == "connected" and row["last_seen"] > row["first_seen"] + 1.0
    wait_until(last_seen_moves, 15, message="b's last_seen following its heartbeats past the time it linked")
