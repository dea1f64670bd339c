"""How a joining node checks a snapshot's bytes on a network whose state hash certifies them `snapshot_lag`
heights after they were taken.

The state hash of height S + L is the digest of [height, last block id, app hash, validator set, seats,
snapshot digest]; block S + L + 1 carries it in its header and a quorum signs that block. The peer serving
snapshot S hands over the first five items (its `preimage`), block S + L + 1 and its commit: the joiner puts
the digest of the bytes it received in sixth place, and they are the certified bytes exactly when the digest
of the six is the header's state hash and the commit verifies against the validator set it proved from its
own genesis.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from exchange.chain.types.blocks import Block, Commit, Malformed
from exchange.chain.state.chainstate import STATE_DOMAIN
from exchange.chain.types.codec import digest
from exchange.chain.types.validators import ValidatorSet
from exchange.wire import Wire


class SnapshotCertificate(NamedTuple):
    preimage: Wire              # the state hash of S + lag without its last item, the snapshot's digest
    block: Block                # block S + lag + 1: its header carries that state hash
    commit: Commit              # its quorum certificate

    def wire(self) -> Wire:
        return [self.preimage, self.block.wire(), self.commit.wire()]

    @classmethod
    def from_wire(cls, data: object) -> "SnapshotCertificate":
        if type(data) is not list or len(data) != 3 or type(data[0]) is not list:
            raise Malformed("bad_snapshot_certificate")
        return cls(data[0], Block.from_wire(data[1]), Commit.from_wire(data[2]))


def certificate_problem(certificate: SnapshotCertificate | None, height: int, lag: int, data_digest: bytes,
                        validators_at: Callable[[int], ValidatorSet], chain_id: str,
                        verify: Callable[[bytes, bytes, bytes], bool]) -> str | None:
    """Why `certificate` does not prove that the snapshot of `height` whose digest is `data_digest` is the one
    the network certified, or None."""
    if certificate is None:
        return "no certificate for the snapshot's bytes"
    certifying = height + lag
    block, commit, preimage = certificate.block, certificate.commit, certificate.preimage
    header = block.header
    if header.height != certifying + 1 or commit.height != certifying + 1 or commit.block_id != block.id:
        return f"its certificate is not the block after height {certifying}"
    if len(preimage) != 5 or preimage[0] != certifying or preimage[1] != header.prev_id:
        return f"its certificate is not the state of height {certifying}"
    if digest(STATE_DOMAIN, [*preimage, data_digest]) != header.app_hash:
        return f"the state hash of height {certifying} does not cover its bytes"
    if not commit.verify(chain_id, validators_at(certifying + 1), verify):
        return f"no quorum certificate for the block after height {certifying}"
    return None
