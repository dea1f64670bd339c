"""AccountStore: the account keys this node holds, one file per account in DATA_DIR/accounts/.

An account is an Ed25519 key pair; its id is the 64-hex public key, the same on every node, and its
name is local to this DATA_DIR (`default` is created at the node's first start). Each key is an
unencrypted PKCS#8 PEM like the node key (`openssl pkey -in DATA_DIR/accounts/NAME.pem -noout -text`
shows it): the directory is 0700, each file 0600, and a looser mode is refused with the fix named,
since anyone who reads a key can trade for its account. `exchange-node account new` writes files
while the node runs; the store reads the directory again when asked for a name it does not know.
"""
from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

from exchange.crypto import SigningKey
from node.keyfile import create_key_file, load_key_file, raw_seed

ACCOUNTS_DIR_NAME = "accounts"
KEY_SUFFIX = ".pem"
DEFAULT_ACCOUNT = "default"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
ACCOUNT_ID = re.compile(r"[0-9a-f]{64}")
RACY_SECONDS = 2        # a directory changed this recently may change again within its timestamp's resolution


class AccountError(Exception):
    """An account that cannot be created or used; the message names the path or name and the fix."""


class Account:
    """One account key: `sign` is what every order, cancel and replace of the account goes through."""

    __slots__ = ("name", "public_key", "id", "path", "_key")

    def __init__(self, name: str, seed: bytes, path: Path | None = None) -> None:
        self._key = SigningKey(seed)
        self.name = name
        self.public_key: bytes = self._key.public_key
        self.id: str = self.public_key.hex()
        self.path = path

    def sign(self, data: bytes) -> bytes:
        """64-byte Ed25519 signature of `data`."""
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"Account(name={self.name!r}, id={self.id!r})"


def check_name(name: str) -> str:
    """`name` if it can name an account file; AccountError otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise AccountError(f"invalid account name {name!r}: use 1-32 of A-Z a-z 0-9 . _ - (not starting with . _ -)")
    if ACCOUNT_ID.fullmatch(name):
        raise AccountError(f"invalid account name {name!r}: it would read as an account id")
    return name


class AccountStore:
    """The accounts in one DATA_DIR, loaded lazily and cached by name and by id."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = Path(data_dir) / ACCOUNTS_DIR_NAME
        self._by_name: dict[str, Account] = {}
        self._by_id: dict[str, Account] = {}
        self._read_as_of: tuple[int, int] | None = None     # the directory's (inode, mtime) when last read whole

    def ensure_default(self) -> Account:
        """The `default` account, created the first time (the node calls this at start)."""
        try:
            return self.get(DEFAULT_ACCOUNT)
        except KeyError:
            return self.new(DEFAULT_ACCOUNT, exist_ok=True)

    def get(self, name_or_id: str) -> Account:
        """An account by name or 64-hex id; KeyError if this DATA_DIR holds no such account."""
        account = self._by_name.get(name_or_id) or self._by_id.get(name_or_id)
        if account is None:
            self.reload()
            account = self._by_name.get(name_or_id) or self._by_id.get(name_or_id)
        if account is None:
            raise KeyError(name_or_id)
        return account

    def list(self) -> list[Account]:
        """Every account in the directory, by name."""
        self.reload()
        return [self._by_name[name] for name in sorted(self._by_name)]

    def new(self, name: str | None = None, *, exist_ok: bool = False) -> Account:
        """Create an account (named `account-N`, the first free N, when `name` is None)."""
        if name is not None:
            check_name(name)
        self._open_directory(create=True)
        while True:
            candidate = name or self._free_name()
            path = self.directory / f"{candidate}{KEY_SUFFIX}"
            if _create_key_file(path):
                return self._load(candidate, path)
            if name is None:
                continue                      # another process took that name meanwhile: try the next
            if exist_ok:
                return self.get(name)
            raise AccountError(f"account {name!r} already exists ({path})")

    def reload(self) -> None:
        """Read the directory again: picks up accounts another process created. Skipped while the directory is
        unchanged since it was last read (every block lists the accounts); a change within RACY_SECONDS of the
        read may share its timestamp, so such a directory is read again each time."""
        found = self._open_directory(create=False)
        if found is None:
            return
        stamp = (found.st_ino, found.st_mtime_ns)
        if stamp == self._read_as_of:
            return
        for path in sorted(self.directory.glob(f"*{KEY_SUFFIX}")):
            name = path.name[:-len(KEY_SUFFIX)]
            if name not in self._by_name and NAME_PATTERN.fullmatch(name):
                self._load(name, path)
        settled = time.time_ns() - found.st_mtime_ns > RACY_SECONDS * 1_000_000_000
        self._read_as_of = stamp if settled else None

    def _free_name(self) -> str:
        taken = {p.name[:-len(KEY_SUFFIX)] for p in self.directory.glob(f"*{KEY_SUFFIX}")}
        n = 1
        while f"account-{n}" in taken:
            n += 1
        return f"account-{n}"

    def _open_directory(self, create: bool) -> os.stat_result | None:
        """Check (or create) the directory: its stat, or None if it does not exist and `create` is off."""
        if create:
            try:
                self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # DATA_DIR itself is 0700 too
                self.directory.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise AccountError(f"cannot create {self.directory}: {exc.strerror or exc}") from None
        try:
            found = self.directory.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AccountError(f"cannot read {self.directory}: {exc.strerror or exc}") from None
        mode = found.st_mode
        if not stat.S_ISDIR(mode):
            raise AccountError(f"{self.directory} is not a directory; move it away so the node can create it")
        if os.name == "posix" and mode & 0o077:
            raise AccountError(f"account directory {self.directory} is accessible by group/others (mode "
                               f"{stat.S_IMODE(mode):04o}); fix with: chmod 700 {self.directory}")
        return found

    def _load(self, name: str, path: Path) -> Account:
        account = Account(name, _read_seed(path), path)
        self._by_name[name] = account
        self._by_id[account.id] = account
        return account


def _read_seed(path: Path) -> bytes:
    return raw_seed(load_key_file(path, "account key", f"restore it from a backup or move it out of {path.parent}",
                                  AccountError))


def _create_key_file(path: Path) -> bool:
    try:
        return create_key_file(path)
    except OSError as exc:
        raise AccountError(f"cannot write account key {path}: {exc.strerror or exc}") from None
