"""Settings loading: layer precedence, every validation error, cross-setting caps."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config import Settings, SettingsError, load_settings


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(**kwargs) -> SettingsError:
    kwargs.setdefault("env", {})
    with pytest.raises(SettingsError) as info:
        load_settings(**kwargs)
    return info.value


# --- precedence: defaults < file < env < cli -------------------------------------------------------

def test_defaults_when_nothing_given():
    s = load_settings(env={})
    assert (s.p2p_port, s.p2p_host, s.api_host, s.api_port) == (7946, "0.0.0.0", "127.0.0.1", 7947)
    assert s.network_id == "exchange-mainnet" and s.bootstrap_peers == () and s.grenache_rpc_port is None
    assert s.data_dir == Path.home() / ".local" / "share" / "exchange-node"
    assert s.peers_file == s.data_dir / ".peers.json"


def test_file_overrides_defaults(tmp_path):
    path = write_toml(tmp_path, 'p2p_port = 9000\nbootstrap_peers = ["10.0.0.1:7946", "[::1]:7000"]\n'
                                'discovery_mdns = false\nlog_level = "debug"\n')
    s = load_settings(env={}, config_file=path)
    assert s.p2p_port == 9000 and s.discovery_mdns is False and s.log_level == "DEBUG"
    assert s.bootstrap_peers == (("10.0.0.1", 7946), ("::1", 7000))
    assert s.api_port == 7947  # untouched keys keep defaults


def test_env_overrides_file(tmp_path):
    path = write_toml(tmp_path, "p2p_port = 9000\nmax_peers = 20\n")
    s = load_settings(env={"P2P_PORT": "9100"}, config_file=path)
    assert s.p2p_port == 9100 and s.max_peers == 20


def test_cli_overrides_env_and_none_means_not_given(tmp_path):
    path = write_toml(tmp_path, "p2p_port = 9000\n")
    s = load_settings(cli={"p2p_port": 9200, "api_port": None}, env={"P2P_PORT": "9100", "API_PORT": "8000"},
                      config_file=path)
    assert s.p2p_port == 9200 and s.api_port == 8000


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("P2P_PORT", "9300")
    assert load_settings().p2p_port == 9300


def test_data_dir_follows_xdg_and_peer_storage_path(tmp_path):
    s = load_settings(env={"XDG_DATA_HOME": str(tmp_path)})
    assert s.data_dir == tmp_path / "exchange-node"
    s = load_settings(env={"DATA_DIR": str(tmp_path / "d"), "PEER_STORAGE_PATH": str(tmp_path / "p.json")})
    assert s.data_dir == tmp_path / "d" and s.peers_file == tmp_path / "p.json"
    assert load_settings(env={"XDG_DATA_HOME": "relative"}).data_dir.is_absolute()


# --- parsing of each kind ---------------------------------------------------------------------------

@pytest.mark.parametrize("word,expected", [("1", True), ("yes", True), ("ON", True), ("True", True),
                                           ("0", False), ("no", False), ("off", False), ("FALSE", False)])
def test_booleans(word, expected):
    assert load_settings(env={"P2P_ENABLED": word}).p2p_enabled is expected


def test_lists_and_optionals():
    s = load_settings(env={"BOOTSTRAP_PEERS": " a.example:1 , [2001:db8::1]:7946,,a.example:1",
                           "MDNS_INTERFACES": "127.0.0.1, ::1", "GRAPE_URL": "http://h:30001/,https://g",
                           "ADVERTISE_HOST": "", "GRENACHE_RPC_PORT": "1337", "LOG_FORMAT": "JSON"})
    assert s.bootstrap_peers == (("a.example", 1), ("2001:db8::1", 7946))
    assert s.mdns_interfaces == ("127.0.0.1", "::1")
    assert s.grape_urls == ("http://h:30001", "https://g")
    assert s.advertise_host is None and s.grenache_rpc_port == 1337 and s.log_format == "json"


def test_cli_accepts_native_values(tmp_path):
    s = load_settings(env={}, cli={"bootstrap_peers": [("h", 1), "g:2"], "data_dir": tmp_path,
                                   "discovery_pex": False, "heartbeat_interval": 2})
    assert s.bootstrap_peers == (("h", 1), ("g", 2)) and s.data_dir == tmp_path
    assert s.discovery_pex is False and s.heartbeat_interval == 2.0


# --- errors name the setting and the value ----------------------------------------------------------

@pytest.mark.parametrize("env,expected", [
    ({"P2P_PORT": "70000"}, "invalid P2P_PORT='70000': must be an integer 0-65535"),
    ({"API_PORT": "-1"}, "invalid API_PORT='-1'"),
    ({"MAX_PEERS": "abc"}, "invalid MAX_PEERS='abc': must be an integer >= 1"),
    ({"MAX_PEERS": "0"}, "invalid MAX_PEERS='0'"),
    ({"P2P_ENABLED": "maybe"}, "invalid P2P_ENABLED='maybe': must be a boolean"),
    ({"DISCOVERY_MDNS": ""}, "invalid DISCOVERY_MDNS=''"),
    ({"LOG_LEVEL": "loud"}, "invalid LOG_LEVEL='loud': must be one of DEBUG, INFO, WARNING, ERROR"),
    ({"LOG_FORMAT": "xml"}, "invalid LOG_FORMAT='xml': must be one of text, json"),
    ({"EVENT_LOOP": "trio"}, "invalid EVENT_LOOP='trio'"),
    ({"NETWORK_ID": "a b"}, "invalid NETWORK_ID='a b'"),
    ({"NETWORK_ID": "x" * 65}, "invalid NETWORK_ID="),
    ({"MARKETS": " "}, "invalid MARKETS=' '"),
    ({"HEARTBEAT_INTERVAL": "0"}, "invalid HEARTBEAT_INTERVAL='0': must be a number > 0"),
    ({"PEER_RECONNECT_INTERVAL": "nan"}, "invalid PEER_RECONNECT_INTERVAL='nan'"),
    ({"DEAD_AFTER": "1"}, "invalid DEAD_AFTER='1': must be an integer >= 2"),
    ({"MAX_FRAME_BYTES": "100"}, "invalid MAX_FRAME_BYTES='100': must be an integer 1024-67108864"),
    ({"P2P_HOST": "bad host"}, "invalid P2P_HOST='bad host'"),
    ({"MDNS_INTERFACES": "127.0.0.1,eth0"}, "invalid MDNS_INTERFACES='eth0': must be an IP address"),
    ({"GRAPE_URL": "ftp://x"}, "invalid GRAPE_URL='ftp://x'"),
    ({"GRENACHE_RPC_PORT": "99999"}, "invalid GRENACHE_RPC_PORT='99999'"),
    ({"DISCOVERY_GRENACHE": "on", "GRAPE_URL": ""}, "invalid GRAPE_URL=''"),
])
def test_env_errors(env, expected):
    assert str(error_of(env=env)).startswith(expected)


@pytest.mark.parametrize("entry", ["nohost", "h:0", "h:port", "::1:7946", "[::1]", ":7946", "bad host:1"])
def test_bootstrap_error_names_the_bad_entry(entry):
    err = error_of(env={"BOOTSTRAP_PEERS": f"ok.example:1,{entry}"})
    assert err.setting == "BOOTSTRAP_PEERS" and err.value == entry
    assert str(err).startswith(f"invalid BOOTSTRAP_PEERS={entry!r}: must be host:port")


def test_error_attributes():
    err = error_of(env={"P2P_PORT": "70000"})
    assert (err.setting, err.value) == ("P2P_PORT", "70000") and isinstance(err, ValueError)


def test_toml_error_names_key_value_and_file(tmp_path):
    path = write_toml(tmp_path, "p2p_port = 70000\n")
    assert str(error_of(config_file=path)) == f"invalid p2p_port=70000 (in {path}): must be an integer 0-65535"
    path = write_toml(tmp_path, 'discovery_mdns = "sometimes"\n')
    assert str(error_of(config_file=path)).startswith("invalid discovery_mdns='sometimes'")
    path = write_toml(tmp_path, "max_peers = true\n")
    assert str(error_of(config_file=path)).startswith("invalid max_peers=True")


def test_unknown_toml_key(tmp_path):
    path = write_toml(tmp_path, "p2p_prot = 7946\n")
    err = error_of(config_file=path)
    assert err.setting == "p2p_prot" and "unknown setting" in str(err) and "p2p_port" in str(err)


def test_bad_toml_syntax(tmp_path):
    path = write_toml(tmp_path, "p2p_port = \n")
    err = error_of(config_file=path)
    assert err.setting == "config_file" and str(path) in str(err) and "not valid TOML" in str(err)


def test_missing_config_file(tmp_path):
    err = error_of(config_file=tmp_path / "absent.toml")
    assert err.setting == "config_file" and "cannot read" in str(err)


def test_unknown_cli_key_and_bad_cli_value():
    assert "unknown setting" in str(error_of(cli={"nope": 1}))
    assert str(error_of(cli={"p2p_port": 70000})).startswith("invalid p2p_port=70000")


# --- cross-setting caps and the table ---------------------------------------------------------------

def test_caps_follow_max_peers_and_frame_size():
    s = load_settings(env={"MAX_PEERS": "2", "MAX_FRAME_BYTES": "8388608"})
    assert s.target_outbound == 2
    assert s.send_buffer_bytes == 8388608


def test_env_names_and_describe_cover_every_field():
    names = Settings.env_names()
    assert names["p2p_port"] == "P2P_PORT" and names["grape_urls"] == "GRAPE_URL"
    assert list(names) == [f.name for f in dataclasses.fields(Settings)]
    assert len(set(names.values())) == len(names)
    rows = {row.name: row for row in Settings.describe()}
    assert rows["max_peers"].default == 50 and all(row.help for row in rows.values())


def test_settings_is_frozen_and_replaceable():
    s = load_settings(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.p2p_port = 1  # type: ignore[misc]
    assert dataclasses.replace(s, p2p_port=0).p2p_port == 0


def test_every_default_passes_its_own_validation():
    for row in Settings.describe():
        assert Settings.parser_for(row.name)(row.default) == row.default, row.name


# --- control API exposure ----------------------------------------------------------------------------

@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST.", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
    ("192.0.2.1", False), ("node.example.org", False), ("localhost.example.org", False), ("", False),
])
def test_is_loopback(host, loopback):
    from config.parsers import is_loopback

    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "node.example.org"])
def test_api_beyond_loopback_needs_a_token(host):
    err = error_of(env={"API_HOST": host})
    assert err.setting == "API_HOST" and "API_TOKEN" in str(err) and repr(host) in str(err)
    s = load_settings(env={"API_HOST": host, "API_TOKEN": "x" * 16})
    assert s.api_host == host and s.api_token == "x" * 16


def test_api_token_is_validated_and_never_shown():
    for bad in ["short", "x" * 257, "has a space in the middle", "tab\tinside-0123456789"]:
        err = error_of(env={"API_TOKEN": bad})
        assert err.setting == "API_TOKEN" and bad not in str(err) and "(hidden)" in str(err)
    s = load_settings(env={"API_TOKEN": "  sekrit-sekrit-sekrit  "})
    assert s.api_token == "sekrit-sekrit-sekrit" and "sekrit" not in repr(s)
    assert load_settings(env={"API_TOKEN": ""}).api_token is None
