"""Join tokens: a secret the founder writes to its DATA_DIR that grants a seat without the validators' votes.

As `docker swarm join-token` or k3s's server token: the founder makes a random 32-byte seed, puts the
public key of the Ed25519 key it seeds into the genesis (`admission_key`), and writes the token, which
names the chain and holds the seed, to `DATA_DIR/join-token` (mode 0600). A node started with it
(`JOIN_TOKEN`) trusts only that chain and signs its own `join` with the seed, which every node checks
against the genesis. A token never leaves a node but by its operator's hand; without it a node is a
follower until the validators approve it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from exchange.crypto import SEED_BYTES, SigningKey

PREFIX = "exn1"
TOKEN_FILE = "join-token"
_FORM = re.compile(rf"^{PREFIX}-([0-9a-f]{{64}})-([0-9a-f]{{64}})$")


@dataclass(frozen=True)
class JoinToken:
    chain_id: str
    seed: bytes

    @classmethod
    def new(cls, seed: bytes | None = None) -> "JoinToken":
        """A token whose chain id is filled in once the genesis (which holds its key) exists."""
        return cls("", seed if seed is not None else os.urandom(SEED_BYTES))

    @classmethod
    def parse(cls, text: str) -> "JoinToken":
        match = _FORM.match(text.strip())
        if match is None:
            raise ValueError(f"a join token looks like {PREFIX}-<64 hex: chain id>-<64 hex: secret>")
        return cls(match.group(1), bytes.fromhex(match.group(2)))

    @property
    def key(self) -> SigningKey:
        return SigningKey(self.seed)

    @property
    def admission_key(self) -> bytes:
        return self.key.public_key

    def for_chain(self, chain_id: str) -> "JoinToken":
        return JoinToken(chain_id, self.seed)

    def text(self) -> str:
        return f"{PREFIX}-{self.chain_id}-{self.seed.hex()}"

    def write(self, data_dir: Path) -> Path:
        """Write the token for the operator, readable by its owner only."""
        path = Path(data_dir) / TOKEN_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.text() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    def __repr__(self) -> str:     # never print the secret by accident
        return f"JoinToken(chain_id={self.chain_id[:16]}...)"


def read_token(data_dir: Path) -> JoinToken | None:
    path = Path(data_dir) / TOKEN_FILE
    try:
        return JoinToken.parse(path.read_text())
    except (OSError, ValueError):
        return None
