"""A real node with LOG_FORMAT=json: every line is one JSON object with `node`, and a failing
discovery strategy says which address failed and why in fields, not only in the text."""
from __future__ import annotations

import json

from tests.harness import closed_port, wait_until


def _entries(node) -> list[dict]:
    return [json.loads(line) for line in node.log_path.read_text().splitlines() if line.startswith("{")]


def test_json_lines_have_node_and_fields(cluster):
    grape = f"http://127.0.0.1:{closed_port()}"
    node = cluster.node("a", log_format="json", discovery_grenache="true", grape_urls=grape)
    failing = wait_until(lambda: [e for e in _entries(node) if e.get("reason") == "grape_unreachable"], 20,
                         message="the grape failure logged with a reason")
    assert failing[0]["address"] == grape and failing[0]["level"] == "WARNING"
    assert node.stop() == 0
    lines = node.log_path.read_text().splitlines()
    entries = _entries(node)
    assert len(entries) == len(lines), "every line is a JSON object"
    # only the DATA_DIR lock is taken (and may log) before the node's key, and so its id, is read
    assert all(e["node"] == node.node_id for e in entries if e.get("logger") != "storage.lock")
    assert any(e["msg"].startswith("node ") and e.get("address") == node.info["api"] for e in entries)
