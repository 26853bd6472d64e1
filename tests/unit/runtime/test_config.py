"""Configuration: flags, YAML, validation messages."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from pai_monitoring import registry
from pai_monitoring.node_health import NodeHealthOptions
from pai_monitoring.runtime.config import build_config, parse_listen_address
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.webconfig import load_web_config

CLASSES = registry.collector_classes("pai-job-exporter")


def config(*argv: str):  # type: ignore[no-untyped-def]
    return build_config("pai-job-exporter", 9102, CLASSES, list(argv))


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [(":9102", "0.0.0.0", 9102), ("127.0.0.1:80", "127.0.0.1", 80), ("[::1]:9102", "::1", 9102),
     ("node-1.example:9102", "node-1.example", 9102)],
)  # fmt: skip
def test_listen_addresses(text: str, host: str, port: int) -> None:
    address = parse_listen_address(text)
    assert (address.host, address.port) == (host, port)


@pytest.mark.parametrize("text", ["9102", "localhost", ":http", ":70000", "::1:9102", "[nothost]:1", "a b:1"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--web\.listen-address"):
        parse_listen_address(text)


def test_defaults() -> None:
    cfg = config()
    assert str(cfg.listen) == "0.0.0.0:9102"
    assert cfg.max_requests == 10
    assert cfg.textfile_directory is None
    assert list(cfg.collectors) == [name for name, cls in CLASSES.items() if cls.default_enabled]


def test_collector_options_from_flags_and_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "web:\n  max_requests: 3\ncollectors:\n  node_health:\n    interval: 5\n    rss_threshold_bytes: 1024\n"
    )
    cfg = config(f"--config.file={path}", "--collector.node_health.interval=7")
    options = cfg.collectors["node_health"]
    assert isinstance(options, NodeHealthOptions)
    assert options.interval == 7.0  # the flag wins
    assert options.rss_threshold_bytes == 1024  # from the file
    assert options.effective_expiry == 2 * (7.0 + options.timeout)  # two cycles of interval + timeout
    assert cfg.max_requests == 3


def test_disabled_collector_is_absent() -> None:
    assert "node_health" not in config("--no-collector.node_health").collectors


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("surprise: 1\n", "unknown keys"),
        ("web:\n  listen: 1\n", "unknown keys in web"),
        ("collectors:\n  node_health:\n    colour: red\n", "collectors.node_health.colour: unknown option"),
        ("collectors:\n  node_health:\n    interval: soon\n", "collectors.node_health.interval"),
        ("collectors: [1]\n", "collectors must be a mapping"),
        ("[unclosed\n", "not valid YAML"),
    ],
)
def test_bad_yaml(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        config(f"--config.file={path}")


def test_web_config_checks_hashes_and_files(tmp_path: Path) -> None:
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{good}'\n")
    assert set(load_web_config(path).basic_auth_users) == {"alice"}
    path.write_text("basic_auth_users:\n  alice: plaintext\n")
    with pytest.raises(ConfigError, match="not a bcrypt hash"):
        load_web_config(path)
    path.write_text("tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n")
    with pytest.raises(ConfigError, match=r"missing\.pem does not exist"):
        load_web_config(path)
    path.write_text("tls_server_config:\n  cert_file: a\n")
    with pytest.raises(ConfigError, match="needs both cert_file and key_file"):
        load_web_config(path)
    path.write_text("http2: true\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_web_config(path)
