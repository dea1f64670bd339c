"""Node identity: key file creation and checks, node id derivation, signing and verification."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from node.identity import KEY_FILE_NAME, IdentityError, NodeIdentity


def test_create_makes_private_dir_and_key(tmp_path):
    data_dir = tmp_path / "a" / "data"
    ident = NodeIdentity.load_or_create(data_dir)
    key_file = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE_NAME]  # no temp file left behind
    assert len(ident.public_key_bytes) == 32
    assert ident.node_id == hashlib.sha256(ident.public_key_bytes).hexdigest()[:40]
    assert ident.node_id == NodeIdentity.node_id_for(ident.public_key_bytes)
    assert ident.path == key_file and "PRIVATE" not in repr(ident)


def test_reload_gives_same_identity(tmp_path):
    first = NodeIdentity.load_or_create(tmp_path)
    before = (tmp_path / KEY_FILE_NAME).read_bytes()
    second = NodeIdentity.load_or_create(tmp_path)
    assert second.node_id == first.node_id and second.public_key_bytes == first.public_key_bytes
    assert (tmp_path / KEY_FILE_NAME).read_bytes() == before
    assert NodeIdentity.load_or_create(tmp_path / "other").node_id != first.node_id


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_loose_mode_is_refused_with_fix(tmp_path, mode):
    NodeIdentity.load_or_create(tmp_path)
    key_file = tmp_path / KEY_FILE_NAME
    key_file.chmod(mode)
    with pytest.raises(IdentityError) as info:
        NodeIdentity.load_or_create(tmp_path)
    message = str(info.value)
    assert str(key_file) in message and f"chmod 600 {key_file}" in message and f"{mode:04o}" in message


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x00" * 32,
                                     b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_bad_content_names_path_and_fix(tmp_path, content):
    key_file = tmp_path / KEY_FILE_NAME
    key_file.write_bytes(content)
    key_file.chmod(0o600)
    with pytest.raises(IdentityError) as info:
        NodeIdentity.load_or_create(tmp_path)
    assert str(key_file) in str(info.value) and "delete it" in str(info.value)


def test_wrong_key_type_is_refused(tmp_path):
    key_file = tmp_path / KEY_FILE_NAME
    key_file.write_bytes(generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_file.chmod(0o600)
    with pytest.raises(IdentityError, match="not an Ed25519 key"):
        NodeIdentity.load(key_file)


def test_sign_verify_and_tamper_detection():
    ident, other = NodeIdentity.generate(), NodeIdentity.generate()
    data = b'{"order":"o1","qty":"1.5"}'
    sig = ident.sign(data)
    assert len(sig) == 64
    assert NodeIdentity.verify(ident.public_key_bytes, sig, data)
    assert NodeIdentity.verify(ident.public_key_bytes, sig, data)  # cached key path
    assert not NodeIdentity.verify(ident.public_key_bytes, sig, data + b" ")
    assert not NodeIdentity.verify(other.public_key_bytes, sig, data)
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not NodeIdentity.verify(ident.public_key_bytes, flipped, data)


@pytest.mark.parametrize("public_key,signature", [
    (b"short", b"\x00" * 64), (b"\x00" * 32, b"short"), (None, b"\x00" * 64), (b"\x01" * 32, None)])
def test_verify_never_raises_on_junk(public_key, signature):
    assert NodeIdentity.verify(public_key, signature, b"data") is False


def test_verify_accepts_bytearray_and_memoryview():
    ident = NodeIdentity.generate()
    sig = ident.sign(b"x")
    assert NodeIdentity.verify(bytearray(ident.public_key_bytes), memoryview(sig), b"x")
