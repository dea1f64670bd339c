"""Real process: a restarted node serves the browser certificate it served before, so a page given its hash (a
link, the DHT record) still reaches it; the certificates are kept owner-only in the data dir."""
from __future__ import annotations

from tests.harness import Cluster


def test_a_restarted_node_publishes_the_same_certificate_hashes(cluster: Cluster):
    node = cluster.node("solo", found_after=0, browser_webtransport="true")
    before = node.status()["browser"]
    assert before["cert_sha256"], before
    kept = node.data_dir / "browser-certificates.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert node.stop() == 0
    node.start()
    after = node.status()["browser"]
    assert after["cert_sha256"] == before["cert_sha256"] and after["webtransport"] == before["webtransport"], \
        (before, after)
    kept.write_text("damaged")
    assert node.stop() == 0
    node.start()
    fresh = node.status()["browser"]["cert_sha256"]
    assert fresh and fresh != before["cert_sha256"], "an unusable file gives new certificates, and the node starts"
    assert "is not usable" in node.log_path.read_text()
