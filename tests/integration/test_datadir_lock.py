"""A second `exchange-node start` on a DATA_DIR in use exits 2 naming the directory and the holder's PID, and
touches nothing there; the lock goes with its process (even kill -9); DATA_DIR ends up 0700."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

from tests.harness import ROOT


def start_again(data_dir, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Start a second node the way a user would, on the same directory but other ports."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "node.cli", "start", "--data-dir", str(data_dir),
                           "--p2p-host", "127.0.0.1", "--p2p-port", "0", "--api-port", "0",
                           "--discovery-mdns", "false"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_second_node_on_the_same_data_dir_exits_2_naming_the_directory_and_the_pid(cluster):
    first = cluster.node("a")
    runtime_before = (first.data_dir / "node.json").read_bytes()
    second = start_again(first.data_dir)
    assert second.returncode == 2, second.stderr
    assert str(first.data_dir) in second.stderr and f"pid {first.proc.pid}" in second.stderr, second.stderr
    assert (first.data_dir / "node.json").read_bytes() == runtime_before, "the refused node touched DATA_DIR"
    assert first.status()["node_id"] == first.node_id, "the first node keeps serving"
    first.kill()  # kill -9: no clean shutdown, the kernel still drops the lock
    first.start()
    assert first.status()["node_id"]


def test_a_loose_data_dir_is_tightened_to_0700_and_the_node_says_so(cluster):
    node = cluster.node("loose", start=False)
    node.data_dir.chmod(0o755)
    node.start()
    assert stat.S_IMODE(node.data_dir.stat().st_mode) == 0o700
    assert "had mode 0755; tightened to 0700" in node.log_tail(200)  # logged before the node became ready
    assert node.stop() == 0
