"""Configuration: flags, YAML, validation messages."""

from __future__ import annotations

import os
from pathlib import Path

import bcrypt
import pytest

from pai_monitoring import registry
from pai_monitoring.node_health import NodeHealthOptions
from pai_monitoring.runtime.config import build_config, parse_listen_address
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.webconfig import load_web_config
from tests.support.exporter import self_signed_certificate

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
    path.write_text("http2: true\n")  # http2 belongs under http_server_config
    with pytest.raises(ConfigError, match="unknown keys"):
        load_web_config(path)


@pytest.mark.parametrize(
    ("yaml_text", "where", "message"),
    [
        # a quoted "no" is a string, and bool("no") is True: it used to enable the collector
        ('collectors:\n  node_health:\n    enabled: "no"\n', "collectors.node_health.enabled", "true or false"),
        ("collectors:\n  gpu:\n    enabled: 1\n", "collectors.gpu.enabled", "true or false"),
        # 0 is falsy: it used to become the default of 10, where the flag refused it
        ("web:\n  max_requests: 0\n", "web.max_requests", "between 1 and 64"),
        ("web:\n  max_requests: '3'\n", "web.max_requests", "whole number"),
        ("web:\n  max_connections: 100000\n", "web.max_connections", "between 1 and 4096"),
        ("collectors:\n  node_health:\n    interval: 1e10\n", "interval", "YAML reads 1e9 and 1.0e9 as text"),
        ("collectors:\n  node_health:\n    interval: 1.0e+10\n", "interval", "between 0.1 and 86400"),
        ("collectors:\n  node_health:\n    interval: 1.0e-9\n", "interval", "between 0.1 and 86400"),
        ("collectors:\n  node_health:\n    timeout: .nan\n", "timeout", "finite"),
        ("collectors:\n  node_health:\n    rss_threshold_bytes: '1e9'\n", "rss_threshold_bytes", "whole number"),
        ("log:\n  level: 3\n", "log.level", "expected a string"),
    ],
)
def test_yaml_values_are_typed_and_bounded_like_flags(tmp_path: Path, yaml_text: str, where: str, message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as caught:
        config(f"--config.file={path}")
    assert where.replace("_", "-") in str(caught.value) or where in str(caught.value)


def test_yaml_booleans_are_booleans(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("collectors:\n  node_health:\n    enabled: no\n")  # YAML's own boolean: off
    assert "node_health" not in config(f"--config.file={path}").collectors
    path.write_text("collectors:\n  node_health:\n    enabled: false\n")
    assert "node_health" not in config(f"--config.file={path}").collectors


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--collector.node_health.interval=1e10", "between 0.1 and 86400"),
        ("--collector.node_health.interval=1e-9", "between 0.1 and 86400"),
        ("--collector.node_health.interval=inf", "finite"),
        ("--collector.node_health.expiry=nan", "finite"),
        ("--collector.node_health.rss-threshold-bytes=1.5", "whole number"),
        ("--web.max-requests=65", "between 1 and 64"),
        ("--web.max-connections=4", "at least --web.max-requests"),
    ],
)
def test_flags_are_bounded(flag: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(flag)


def test_a_whole_number_may_be_written_in_scientific_notation_on_the_command_line() -> None:
    options = config("--collector.node_health.rss-threshold-bytes=1e9").collectors["node_health"]
    assert isinstance(options, NodeHealthOptions)
    assert options.rss_threshold_bytes == 1_000_000_000


def test_options_of_a_disabled_collector_are_still_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("collectors:\n  node_health:\n    enabled: false\n    interval: -1\n")
    with pytest.raises(ConfigError, match="interval"):
        config(f"--config.file={path}")


def test_configuration_files_must_be_regular_utf8_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):  # reading it would block for ever
        config(f"--config.file={fifo}")
    with pytest.raises(ConfigError, match="not a regular file"):
        config(f"--web.config.file={fifo}")
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes("node_name: n\u00e9ud\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        config(f"--config.file={latin1}")
    with pytest.raises(ConfigError, match="is not a regular file"):
        config(f"--config.file={tmp_path}")
    big = tmp_path / "big.yml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ConfigError, match="at most"):
        config(f"--config.file={big}")


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path, passphrase="secret")


def test_tls_key_problems_are_named(tmp_path: Path, tls_pair: tuple[Path, Path]) -> None:
    cert, key = tls_pair
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    with pytest.raises(ConfigError, match="is encrypted"):  # it used to say only "[Errno 22] Invalid argument"
        load_web_config(web)
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {cert}\n")
    with pytest.raises(ConfigError, match="the key must belong to the certificate"):
        load_web_config(web)
    if os.geteuid() != 0:  # root reads any file, so the permission check can only be seen as another user
        key.chmod(0)
        web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
        with pytest.raises(ConfigError, match="cannot read key_file"):
            load_web_config(web)


def test_exporter_toolkit_http_server_config_is_accepted(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(
        "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n"
        "    X-Content-Type-Options: nosniff\n    Content-Security-Policy: \"default-src 'self'\"\n"
        "    X-XSS-Protection: ''\n"
    )
    assert load_web_config(web).headers == (
        ("X-Frame-Options", "deny"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Security-Policy", "default-src 'self'"),
    )
    for bad, message in (
        ("http_server_config:\n  headers:\n    Set-Cookie: a\n", "is not one of"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "must be one of"),
        ("http_server_config:\n  http2: 'yes'\n", "true or false"),
        ("http_server_config:\n  colour: red\n", "unknown http_server_config keys"),
    ):
        web.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_web_config(web)


def test_help_prints_each_default_once() -> None:
    from pai_monitoring.runtime.config import build_parser

    for action in build_parser("pai-job-exporter", 9102, CLASSES)._actions:
        assert (action.help or "").count("default") <= 1, action.option_strings
