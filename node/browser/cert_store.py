"""The browser endpoint's certificates on disk (DATA_DIR/browser-certificates.json, mode 0600): a restarted node
serves the certificate it served before, so the hashes pages learnt (a link, the DHT record) still reach it.

The file holds the private keys of certificates that only bind a browser to this node through the node key's
signature (node/browser/binding.py): one stolen lets its thief impersonate the endpoint's TLS but not the node."""
from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

from node.browser.certs import Certificate

log = logging.getLogger("node.browser")
FILE_NAME = "browser-certificates.json"


def load(path: Path) -> list[Certificate]:
    """The certificates kept at `path`, served one first; none when there is no file or it is not usable (logged)."""
    try:
        items = json.loads(path.read_text())
        return [Certificate(der=base64.b64decode(item["der"]), cert_pem=item["cert_pem"].encode(),
                            key_pem=item["key_pem"].encode(), not_before=float(item["not_before"]),
                            not_after=float(item["not_after"]), hosts=tuple(item["hosts"])) for item in items]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("browser endpoint: %s is not usable (%s); making new certificates", path, exc)
        return []


def save(path: Path, certificates: list[Certificate]) -> None:
    """Keep `certificates` at `path`, whole or not at all, readable by the node's user only."""
    items = [{"der": base64.b64encode(c.der).decode(), "cert_pem": c.cert_pem.decode(), "key_pem": c.key_pem.decode(),
              "not_before": c.not_before, "not_after": c.not_after, "hosts": list(c.hosts)} for c in certificates]
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(items, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
