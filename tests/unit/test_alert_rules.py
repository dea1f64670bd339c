"""The Prometheus alert rules and the Grafana dashboard in packaging/: promtool checks the rules and runs their
unit tests (packaging/prometheus/alerts.test.yml), every dashboard query parses as PromQL, every metric they
name is one the node exports, and every alert has its section in docs/operations-alerts.md."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.process     # promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "packaging" / "prometheus" / "alerts.rules.yml"
RULE_TESTS = ROOT / "packaging" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "exchange-node.json"
DOC = ROOT / "docs" / "operations-alerts.md"
METRIC = re.compile(r"\b((?:exchange_node|process)_[a-z0-9_]+)")

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool is not installed (Debian/Ubuntu: apt-get install prometheus; "
                                           ".ci/run installs it)")


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_names() -> list[str]:
    return re.findall(r"^ {6}- alert: (\w+)$", RULES.read_text(), re.M)


def dashboard_queries() -> list[str]:
    queries: list[str] = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            queries.extend(target["expr"] for target in panel.get("targets", []))
            walk(panel.get("panels", []))
    walk(json.loads(DASHBOARD.read_text())["panels"])
    return queries


@needs_promtool
def test_promtool_accepts_the_rules():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in checked.stdout


@needs_promtool
def test_the_alert_rules_unit_tests_pass():
    ran = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == set(alert_names()), "every alert has a unit test"


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    queries = [q.replace("$job", "exchange-node").replace("$instance", ".*") for q in dashboard_queries()]
    assert len(queries) >= 20
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{n}", "expr": q}
                                                         for n, q in enumerate(queries)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps(rules))      # JSON is YAML
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def exported_names() -> set[str]:
    """Metric names the node's collectors spell out (node/*.py), with the suffixes the exposition adds."""
    source = "\n".join(p.read_text() for p in (ROOT / "node").rglob("*.py"))
    names = set(METRIC.findall(source))
    names |= {f"{n}_total" for n in names} | {f"{n}{s}" for n in names for s in ("_bucket", "_sum", "_count")}
    return names | {"process_resident_memory_bytes", "process_cpu_seconds_total"}   # ProcessCollector's


def test_rules_and_dashboard_name_only_metrics_the_node_exports():
    used = set(METRIC.findall(RULES.read_text())) | set(METRIC.findall(" ".join(dashboard_queries())))
    assert "exchange_node_chain_quorum" in used and "exchange_node_storage_error" in used
    unknown = used - exported_names()
    assert not unknown, f"no collector exports {sorted(unknown)}"


def test_every_alert_is_explained_in_the_operations_doc():
    doc = DOC.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in doc.splitlines() if line.startswith("## ")}
    for name in alert_names():
        assert f"`{name}`" in doc, f"{name} is not in {DOC.name}"
    linked = set(re.findall(r"operations-alerts\.md#([a-z0-9-]+)", RULES.read_text()))
    assert len(linked) >= 8 and linked <= anchors, f"{DOC.name} has no heading for {sorted(linked - anchors)}"
