"""The Dockerfile builds an image that runs the node as its unprivileged user, with DATA_DIR as a volume
and a HEALTHCHECK that passes against the running node.

Docker's engine does not run on this kind of machine and no image registry is reachable, so the
test builds with buildah (Debian package) from a Debian bookworm base it makes itself with
debootstrap from the Debian mirror, and runs the built image's file system in a chroot as the image's
user (containers themselves cannot start here: crun refuses the host's hybrid cgroup layout). It
takes minutes the first time (about 270 MB), so it is marked `container` and runs with
`make image-test`, not in `make test`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.harness import ROOT, free_ports, wait_until

BUILDAH, DEBOOTSTRAP, CHROOT = shutil.which("buildah"), shutil.which("debootstrap"), shutil.which("chroot")
BASE = "localhost/exchange-node-test-base:bookworm"
STORAGE = ["--storage-driver", "vfs"]
pytestmark = [pytest.mark.container, pytest.mark.timeout(3600),
              pytest.mark.skipif(os.geteuid() != 0 or not (BUILDAH and DEBOOTSTRAP and CHROOT),
                                 reason="needs root, buildah and debootstrap (apt-get install -y buildah debootstrap)")]


def buildah(*args: str, timeout: float = 900) -> str:
    assert BUILDAH is not None          # the module is skipped without it
    result = subprocess.run([BUILDAH, *STORAGE, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"buildah {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def base_image() -> str:
    """Debian bookworm with python3 and venv, made once and kept between runs."""
    assert BUILDAH is not None and DEBOOTSTRAP is not None          # the module is skipped without them
    if subprocess.run([BUILDAH, *STORAGE, "inspect", "--type", "image", BASE], capture_output=True).returncode == 0:
        return BASE
    container = buildah("from", "scratch")
    try:
        root = buildah("mount", container)
        subprocess.run([DEBOOTSTRAP, "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                        "bookworm", root, "http://deb.debian.org/debian"], check=True, capture_output=True,
                       timeout=1800)
        buildah("commit", container, BASE)
    finally:
        subprocess.run([BUILDAH, *STORAGE, "rm", container], capture_output=True)
    return BASE


@pytest.fixture
def image(base_image):
    assert BUILDAH is not None          # the module is skipped without it
    tag = f"localhost/exchange-node-test:{os.getpid()}"
    mounts = []   # where this machine's package registries are reached through its own CA, the build needs it too
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf"):
        if os.path.exists(path):
            mounts += ["-v", f"{path}:{path}:ro"]
    buildah("bud", "--format", "docker", "--network", "host", "--isolation", "chroot", *mounts,
            "--build-arg", f"BASE={base_image}", "-t", tag, str(ROOT))
    yield tag
    subprocess.run([BUILDAH, *STORAGE, "rmi", tag], capture_output=True)


def test_image_runs_the_node_unprivileged_with_a_passing_healthcheck(image):
    config = json.loads(buildah("inspect", "--type", "image", image))["Docker"]["config"]
    assert config["User"] == "exchange-node"
    assert list(config["Volumes"]) == ["/var/lib/exchange-node"]
    assert set(config["ExposedPorts"]) == {"7946/tcp", "7947/tcp"}
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["DATA_DIR"] == "/var/lib/exchange-node"
    check = config["Healthcheck"]["Test"]
    assert check[0] == "CMD" and "/health" in check[-1]
    assert BUILDAH is not None and CHROOT is not None          # the module is skipped without them

    container = buildah("from", image)
    root = Path(buildah("mount", container))
    process = None
    try:
        data = root / "var/lib/exchange-node"
        assert oct(data.stat().st_mode & 0o777) == "0o700"
        api_port, p2p_port = free_ports(2)
        run_env = env | {"API_HOST": "127.0.0.1", "P2P_HOST": "127.0.0.1", "API_PORT": str(api_port),
                         "P2P_PORT": str(p2p_port), "DISCOVERY_MDNS": "false"}
        as_user = [CHROOT, "--userspec=exchange-node:exchange-node", str(root)]
        process = started = subprocess.Popen(as_user + config["Entrypoint"] + config["Cmd"], env=run_env,
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_until(lambda: (data / "node.json").exists() or started.poll() is not None, 60, message="node up")
        assert process.stdout is not None
        assert process.poll() is None, process.stdout.read().decode()
        assert data.stat().st_uid == (data / "node_key").stat().st_uid != 0      # files belong to the user
        health = subprocess.run(as_user + check[1:], env=run_env, capture_output=True, timeout=30)
        assert health.returncode == 0, health.stderr.decode()
        page = urllib.request.urlopen(f"http://127.0.0.1:{api_port}/", timeout=10).read().decode()
        assert "exchange-node console" in page                      # the console's files were installed
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        process = None
        unhealthy = subprocess.run(as_user + check[1:], env=run_env, capture_output=True, timeout=30)
        assert unhealthy.returncode != 0                            # the check fails once the node is gone
    finally:
        if process is not None:
            process.kill()
            process.wait(10)
        subprocess.run([BUILDAH, *STORAGE, "umount", container], capture_output=True)
        subprocess.run([BUILDAH, *STORAGE, "rm", container], capture_output=True)
