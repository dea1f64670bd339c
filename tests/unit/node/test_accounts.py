"""AccountStore: keys on disk with safe modes, lookups by name and id, other processes' accounts, bad files."""
from __future__ import annotations

import multiprocessing
import os
import stat
import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.crypto import verify
from node.accounts import AccountError, AccountStore


def test_default_account_is_created_once_with_private_modes(tmp_path):
    data_dir = tmp_path / "node"
    first = AccountStore(data_dir).ensure_default()
    assert first.name == "default" and len(first.public_key) == 32 and first.id == first.public_key.hex()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "accounts").stat().st_mode) == 0o700
    assert first.path is not None
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert first.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sorted(p.name for p in (data_dir / "accounts").iterdir()) == ["default.pem"]  # no temp file left
    again = AccountStore(data_dir).ensure_default()
    assert again.id == first.id


def test_signatures_verify_and_match_the_pem_key(tmp_path):
    account = AccountStore(tmp_path).new("alice")
    signature = account.sign(b"order bytes")
    assert verify(account.public_key, signature, b"order bytes")
    assert not verify(account.public_key, signature, b"order bytez")
    assert account.path is not None
    pem_key = serialization.load_pem_private_key(account.path.read_bytes(), password=None)
    assert isinstance(pem_key, Ed25519PrivateKey)
    assert pem_key.sign(b"order bytes") == signature  # Ed25519 is deterministic: same key, same signature
    Ed25519PublicKey.from_public_bytes(account.public_key).verify(signature, b"order bytes")


def test_get_by_name_or_id_and_unknown_is_keyerror(tmp_path):
    store = AccountStore(tmp_path)
    alice = store.new("alice")
    assert store.get("alice") is alice and store.get(alice.id) is alice
    with pytest.raises(KeyError):
        store.get("bob")
    with pytest.raises(KeyError):
        store.get(alice.id[:-1] + ("0" if alice.id[-1] != "0" else "1"))


@pytest.mark.process     # a spawn pool of creators
def test_an_account_created_by_another_process_is_found_without_restart(tmp_path):
    running = AccountStore(tmp_path)
    running.ensure_default()
    created = _in_another_process(_create_account, tmp_path, "carol")
    assert running.get("carol").id == created
    assert running.get(created).name == "carol"
    assert [a.name for a in running.list()] == ["carol", "default"]


def test_an_unchanged_directory_is_not_read_again_and_a_changed_one_is(tmp_path, monkeypatch):
    """Every block lists the accounts: a settled, unchanged directory is only stat'ed, not globbed and parsed."""
    store = AccountStore(tmp_path)
    store.new("alice")
    directory = tmp_path / "accounts"
    settled = time.time() - 10
    os.utime(directory, (settled, settled))
    reads: list[str] = []
    real_glob = Path.glob

    def counted_glob(self: Path, pattern: str) -> Iterator[Path]:
        reads.append(pattern)
        return real_glob(self, pattern)
    monkeypatch.setattr(Path, "glob", counted_glob)
    assert [a.name for a in store.list()] == ["alice"]
    assert [a.name for a in store.list()] == ["alice"]
    assert len(reads) == 1
    AccountStore(tmp_path).new("bob")           # another process: the directory changes
    assert [a.name for a in store.list()] == ["alice", "bob"]
    assert [a.name for a in store.list()] == ["alice", "bob"]
    assert len(reads) == 3                      # changed within RACY_SECONDS: read again until it settles


def test_unnamed_accounts_take_the_next_free_name(tmp_path):
    store = AccountStore(tmp_path)
    assert [store.new().name for _ in range(3)] == ["account-1", "account-2", "account-3"]
    (store.directory / "account-2.pem").unlink()
    assert AccountStore(tmp_path).new().name == "account-2"


def test_existing_name_is_refused_and_key_kept(tmp_path):
    store = AccountStore(tmp_path)
    created = store.new("alice").path
    assert created is not None
    before = created.read_bytes()
    with pytest.raises(AccountError, match="already exists"):
        AccountStore(tmp_path).new("alice")
    kept = store.get("alice").path
    assert kept is not None
    assert kept.read_bytes() == before


@pytest.mark.process     # a spawn pool of creators
def test_racing_creators_of_one_name_agree_on_one_key(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_try_create, [(tmp_path, "race")] * 8)
    winners = [r for r in results if not r.startswith("error")]
    assert len(winners) == 1, results
    assert all("already exists" in r for r in results if r.startswith("error")), results
    assert AccountStore(tmp_path).get("race").id == winners[0]


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "-x", "x" * 33, "a b", "é", "ab" * 32])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(AccountError, match="invalid account name"):
        AccountStore(tmp_path).new(name)
    assert not list(tmp_path.rglob("*.pem"))


def test_loose_directory_mode_is_refused_with_the_fix(tmp_path):
    store = AccountStore(tmp_path)
    store.new("alice")
    os.chmod(store.directory, 0o755)
    with pytest.raises(AccountError) as info:
        AccountStore(tmp_path).get("alice")
    assert f"chmod 700 {store.directory}" in str(info.value) and "0755" in str(info.value)


def test_loose_key_mode_is_refused_with_the_fix(tmp_path):
    path = AccountStore(tmp_path).new("alice").path
    assert path is not None
    os.chmod(path, 0o644)
    with pytest.raises(AccountError) as info:
        AccountStore(tmp_path).get("alice")
    assert f"chmod 600 {path}" in str(info.value)


@pytest.mark.parametrize("content, needle", [
    (b"not a key", "not an unencrypted PEM private key"),
    (ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
     "not an Ed25519 key"),
    (Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"password")), "not an unencrypted PEM private key"),
])
def test_unusable_key_files_name_the_path(tmp_path, content, needle):
    directory = tmp_path / "accounts"
    directory.mkdir(mode=0o700)
    path = directory / "bad.pem"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(AccountError) as info:
        AccountStore(tmp_path).get("bad")
    assert needle in str(info.value) and str(path) in str(info.value)


def test_a_file_where_the_directory_should_be(tmp_path):
    (tmp_path / "accounts").write_text("oops")
    with pytest.raises(AccountError, match="not a directory"):
        AccountStore(tmp_path).ensure_default()


def _create_account(data_dir, name):
    return AccountStore(data_dir).new(name).id


def _try_create(data_dir, name):
    try:
        return AccountStore(data_dir).new(name).id
    except AccountError as exc:
        return f"error: {exc}"


def _in_another_process(func, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(func, args)
