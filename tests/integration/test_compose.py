"""packaging/compose/devnet.compose.yml: the devnet as containers. A container engine cannot start containers on
this machine (crun refuses the host's cgroup layout, see test_container_image.py), so this runs each
service's command and settings as a local process instead: the same environment (the image's P2P_HOST /
API_HOST bind loopback here, each "container" gets its own ports, `node0` resolves to 127.0.0.1), the
joiners' entrypoint script as written, reading node0's volume where the file mounts it. The four form one
network with four validators (node0's join token issued by the one-shot `token` service through its API), which
is what the file promises; what it cannot show here is the image,
the compose network's DNS and the health-gated start order."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings
from tests.harness import ROOT, free_ports, wait_until

yaml = pytest.importorskip("yaml", reason="pyyaml is a test dependency (make test-deps)")
COMPOSE = ROOT / "packaging" / "compose" / "devnet.compose.yml"
TOKEN = "compose-test-token-0123456789"
IMAGE_DATA = "/var/lib/exchange-node"


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


CLI_ENV = {"EXCHANGE_NODE_API", "EXCHANGE_NODE_TOKEN"}     # what the one-shot CLI service is given


def _nodes() -> dict:
    """The services that run a node (the others are one-shot CLI commands against one)."""
    return {name: service for name, service in _services().items() if name != "token"}


def test_every_setting_the_file_sets_is_a_real_one():
    known = set(Settings.env_names().values())
    for name, service in _services().items():
        allowed = known | (CLI_ENV if name == "token" else set())
        assert set(service["environment"]) <= allowed, (name, set(service["environment"]) - allowed)
    for name, service in _nodes().items():
        assert service["volumes"][0] == f"{name}:{IMAGE_DATA}"
    assert _services()["node0"]["environment"]["FOUND_AFTER"] == "0"


def test_no_service_has_a_join_token_on_its_command_line():
    for name, service in _services().items():
        words = " ".join([*service.get("entrypoint", []), *service.get("command", [])])
        assert "exn1-" not in words and "JOIN_TOKEN=" not in words and "--join-token " not in words, (name, words)


def _env(service: dict, data_dir: Path, p2p: int, api: int, node0_p2p: int, node0_api: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in set(Settings.env_names().values())}
    for key, value in service["environment"].items():
        value = str(value)
        if value.startswith("${DEVNET_API_TOKEN"):
            value = TOKEN
        env[key] = value.replace("node0:7946", f"127.0.0.1:{node0_p2p}").replace("node0:7947",
                                                                                 f"127.0.0.1:{node0_api}")
    bin_dir = str(Path(sys.executable).parent)
    return env | {"DATA_DIR": str(data_dir), "P2P_HOST": "127.0.0.1", "P2P_PORT": str(p2p), "API_HOST": "127.0.0.1",
                  "API_PORT": str(api), "PATH": f"{bin_dir}:{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def _command(service: dict, founder_dir: Path) -> list[str]:
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        return ["exchange-node", *(word.replace("/founder/", f"{founder_dir}/") for word in service["command"])]
    assert entrypoint[:2] == ["sh", "-c"]
    return ["sh", "-c", entrypoint[2].replace("$$", "$").replace("/founder/", f"{founder_dir}/")]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs sh")
def test_the_services_form_one_network_of_four_validators(tmp_path):
    services = _services()
    ports = free_ports(2 * len(services))
    node0_p2p, node0_api = ports[2 * list(services).index("node0")], ports[2 * list(services).index("node0") + 1]
    procs: list[subprocess.Popen] = []
    try:
        for index, (name, service) in enumerate(services.items()):
            data_dir = tmp_path / name
            data_dir.mkdir()
            env = _env(service, data_dir, ports[2 * index], ports[2 * index + 1], node0_p2p, node0_api)
            with open(data_dir / "out.log", "wb") as log:
                procs.append(subprocess.Popen(_command(service, tmp_path / "node0"), env=env, cwd=ROOT, stdout=log,
                                              stderr=subprocess.STDOUT))

        def status(index: int) -> dict:
            import urllib.request
            request = urllib.request.Request(f"http://127.0.0.1:{ports[2 * index + 1]}/status",
                                             headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())

        nodes = [i for i, name in enumerate(services) if name != "token"]

        def formed() -> bool:
            views = [status(i) for i in nodes]
            return len({v["chain_id"] for v in views}) == 1 and all(len(v["validators"]) == 4 and v["quorum"]
                                                                  for v in views)
        wait_until(formed, 60, interval=0.3, message="the four services form one network of four validators")
        assert {status(i)["network_id"] for i in nodes} == {"devnet-compose"}
        assert procs[list(services).index("token")].wait(10) == 0, "the one-shot token service ends once issued"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
