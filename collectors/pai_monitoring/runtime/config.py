"""One typed, validated configuration per daemon, built from flags and an optional YAML file.

Flags win over the YAML file, which wins over defaults. Every problem raises :class:`ConfigError` naming the flag,
so ``main`` can exit 2 before any port is bound or any collector is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pai_monitoring import __version__
from pai_monitoring.runtime.collector import CollectorOptions, default_node_name
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.files import read_yaml_mapping
from pai_monitoring.runtime.loader import CollectorClass
from pai_monitoring.runtime.options import Parser, build_options, dest_name, flag_name, option_fields, parser_for
from pai_monitoring.runtime.webconfig import WebConfig, load_web_config

DEFAULT_MAX_REQUESTS = 10
MAX_REQUESTS_BOUNDS = (1, 64)
DEFAULT_MAX_CONNECTIONS = 256
MAX_CONNECTIONS_BOUNDS = (1, 4096)
"""Open connections at once; beyond the unit's ``LimitNOFILE`` accepting would fail anyway."""
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class _Setting:
    """A daemon-wide setting: its flag and its place in the YAML file (``section.key``, or ``key`` at the top)."""

    dest: str
    flag: str
    section: str
    key: str
    help: str

    @property
    def yaml_path(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key


_SETTINGS = (
    _Setting("listen_address", "--web.listen-address", "web", "listen_address", "address to serve HTTP on"),
    _Setting(
        "web_config_file", "--web.config.file", "web", "config_file",
        "TLS, basic auth and HTTP headers, in the exporter-toolkit web configuration format",
    ),
    _Setting(
        "max_requests", "--web.max-requests", "web", "max_requests",
        f"concurrent HTTP requests served, {MAX_REQUESTS_BOUNDS[0]}-{MAX_REQUESTS_BOUNDS[1]}; more are answered 503 "
        f"(default {DEFAULT_MAX_REQUESTS})",
    ),
    _Setting(
        "max_connections", "--web.max-connections", "web", "max_connections",
        f"open HTTP connections, {MAX_CONNECTIONS_BOUNDS[0]}-{MAX_CONNECTIONS_BOUNDS[1]}; past it the oldest idle one "
        f"is closed (default {DEFAULT_MAX_CONNECTIONS})",
    ),
    _Setting(
        "textfile_directory", "--textfile.directory", "textfile", "directory",
        "also write the metrics into this textfile directory",
    ),
    _Setting("node_name", "--node-name", "", "node_name", "this node's name (default $NODE_NAME or the hostname)"),
    _Setting("procfs", "--path.procfs", "path", "procfs", "procfs mount point (default /proc)"),
    _Setting("sysfs", "--path.sysfs", "path", "sysfs", "sysfs mount point (default /sys)"),
    _Setting("rootfs", "--path.rootfs", "path", "rootfs", "root filesystem mount point (default /)"),
    _Setting("log_level", "--log.level", "log", "level", f"one of {', '.join(LOG_LEVELS)} (default info)"),
)  # fmt: skip
_BY_DEST = {setting.dest: setting for setting in _SETTINGS}
_TOP_KEYS = {"collectors"} | {s.section or s.key for s in _SETTINGS}
_SECTION_KEYS: dict[str, set[str]] = {}
for _setting in _SETTINGS:
    if _setting.section:
        _SECTION_KEYS.setdefault(_setting.section, set()).add(_setting.key)


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class DaemonConfig:
    daemon: str
    listen: ListenAddress
    web: WebConfig
    web_config_file: Path | None
    max_requests: int
    max_connections: int
    textfile_directory: Path | None
    once: bool
    node_name: str
    proc_root: Path
    sys_root: Path
    rootfs: Path
    log_level: str
    collectors: dict[str, CollectorOptions] = field(default_factory=dict)
    """Options of the enabled collectors only, in registry order."""
    check_only: bool = False
    """``--config.check``: validate, report and exit without binding or collecting."""


def parse_listen_address(text: str, flag: str = "--web.listen-address") -> ListenAddress:
    """``:9102``, ``0.0.0.0:9102``, ``[::1]:9102`` or ``localhost:9102``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(flag, f"{text!r} is not HOST:PORT (for example :9102 or 127.0.0.1:9102)")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(flag, f"port {port} is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(flag, f"{host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ConfigError(flag, f"{text!r}: write an IPv6 address in brackets, like [::1]:9102")
    elif host and not all(part.isalnum() or part == "" for part in host.replace("-", "").split(".")):
        raise ConfigError(flag, f"{host!r} is not a host name or address")
    return ListenAddress(host or "0.0.0.0", port)


def build_parser(daemon: str, default_port: int, classes: Mapping[str, CollectorClass]) -> argparse.ArgumentParser:
    # Every help text states its own default once, so no ArgumentDefaultsHelpFormatter (it would add a second).
    parser = argparse.ArgumentParser(
        prog=daemon, description=f"{daemon}: Prometheus exporter of the pai-monitoring suite.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"{daemon} {__version__}")
    parser.add_argument("--config.file", dest="config_file", type=Path, help="YAML configuration file; flags win")
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="check the flags, the configuration file and the web configuration file, then exit: 0 when valid, "
        "2 naming the problem; binds nothing and collects nothing",
    )
    for setting in _SETTINGS:
        text = setting.help
        if setting.dest == "listen_address":
            text += f" (default :{default_port})"
        parser.add_argument(setting.flag, dest=setting.dest, metavar="VALUE", help=text)
    parser.add_argument("--once", action="store_true", help="collect once, print the metrics, exit 0 if all succeeded")
    for name, cls in classes.items():
        group = parser.add_argument_group(f"collector {name}", cls.description)
        state = "enabled" if cls.default_enabled else "disabled"
        group.add_argument(
            f"--collector.{name}",
            dest=dest_name(name, "enabled"),
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"enable the {name} collector (default {state})",
        )
        for fld, _tp in option_fields(cls.options_class):
            text = str(fld.metadata.get("help", ""))
            if "(default" not in text:  # a help text that explains its default keeps its own words
                text += f" (default {fld.default if fld.default is not dataclasses.MISSING else None})"
            group.add_argument(flag_name(name, fld.name), dest=dest_name(name, fld.name), metavar="VALUE", help=text)
    return parser


def _load_yaml(path: Path) -> dict[str, Any]:
    raw = read_yaml_mapping(path, "--config.file")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError("--config.file", f"unknown keys in {path}: {', '.join(sorted(map(str, unknown)))}")
    for section, keys in _SECTION_KEYS.items():
        value = raw.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError("--config.file", f"{section} must be a mapping")
        bad = set(value) - keys
        if bad:
            raise ConfigError("--config.file", f"unknown keys in {section}: {', '.join(sorted(map(str, bad)))}")
    return raw


class _Sources:
    """Where each daemon-wide setting comes from: its flag, else its YAML key, else the default."""

    def __init__(self, args: argparse.Namespace, raw: Mapping[str, Any], config_file: Path | None) -> None:
        self._args = args
        self._raw = raw
        self._config_file = config_file

    def get(self, dest: str, parse: Parser, default: object) -> object:
        """The parsed value; a parse error names the flag, or the YAML key and its file."""
        setting = _BY_DEST[dest]
        value = getattr(self._args, dest)
        where, from_yaml = setting.flag, False
        if value is None:
            section = (self._raw.get(setting.section) or {}) if setting.section else self._raw
            value = section.get(setting.key)
            where, from_yaml = f"{setting.yaml_path} in {self._config_file}", True
        if value is None:
            return default
        try:
            return parse(value, from_yaml)
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from None

    def where(self, dest: str) -> str:
        setting = _BY_DEST[dest]
        if getattr(self._args, dest) is not None:
            return setting.flag
        return f"{setting.yaml_path} in {self._config_file} ({setting.flag})"


def _bounded(sources: _Sources, dest: str, default: int, bounds: tuple[int, int]) -> int:
    value = sources.get(dest, parser_for(int), default)
    assert isinstance(value, int)
    low, high = bounds
    if not low <= value <= high:
        raise ConfigError(sources.where(dest), f"must be between {low} and {high}, got {value}")
    return value


def _directory(value: Path, where: str, *, writable: bool = False) -> Path:
    if not value.is_dir():
        raise ConfigError(where, f"{value} does not exist or is not a directory")
    if writable and not os.access(value, os.W_OK):
        raise ConfigError(where, f"{value} is not writable by this user")
    return value


def _path(sources: _Sources, dest: str, default: Path | None) -> Path | None:
    value = sources.get(dest, parser_for(Path | None), default)
    assert value is None or isinstance(value, Path)
    return value


def _collectors(
    classes: Mapping[str, CollectorClass], args: argparse.Namespace, raw: Mapping[str, Any]
) -> dict[str, CollectorOptions]:
    """Options of the enabled collectors. A disabled collector's options are checked too when any are given."""
    yaml_collectors = raw.get("collectors")
    yaml_collectors = {} if yaml_collectors is None else yaml_collectors
    if not isinstance(yaml_collectors, dict):
        raise ConfigError("--config.file", "collectors must be a mapping of collector name to options")
    unknown = set(yaml_collectors) - set(classes)
    if unknown:
        raise ConfigError("--config.file", f"unknown collectors: {', '.join(sorted(map(str, unknown)))}")
    flags = vars(args)
    enabled: dict[str, CollectorOptions] = {}
    for name, cls in classes.items():
        section = yaml_collectors.get(name)
        section = {} if section is None else section
        if not isinstance(section, dict):
            raise ConfigError(f"collectors.{name}", "must be a mapping of options")
        on = flags[dest_name(name, "enabled")]
        if on is None and "enabled" in section:
            try:
                on = parser_for(bool)(section["enabled"], True)
            except ValueError as exc:
                raise ConfigError(f"collectors.{name}.enabled", str(exc)) from None
        if on is None:
            on = cls.default_enabled
        from_flags = {f.name: flags[dest_name(name, f.name)] for f, _tp in option_fields(cls.options_class)}
        given = any(v is not None for v in from_flags.values()) or bool(set(section) - {"enabled"})
        if not on and not given:
            continue
        options = build_options(name, cls.options_class, from_flags, section)
        if on:
            enabled[name] = options
    return enabled


def build_config(
    daemon: str, default_port: int, classes: Mapping[str, CollectorClass], argv: Sequence[str] | None
) -> DaemonConfig:
    """Parse and validate everything. argparse errors exit 2 themselves; the rest raises :class:`ConfigError`."""
    args = build_parser(daemon, default_port, classes).parse_args(argv)
    raw = _load_yaml(args.config_file) if args.config_file else {}
    sources = _Sources(args, raw, args.config_file)

    text = parser_for(str)
    listen_where = sources.where("listen_address")
    listen = parse_listen_address(str(sources.get("listen_address", text, f":{default_port}")), listen_where)
    web_file = _path(sources, "web_config_file", None)
    web = load_web_config(web_file) if web_file else WebConfig()
    max_requests = _bounded(sources, "max_requests", DEFAULT_MAX_REQUESTS, MAX_REQUESTS_BOUNDS)
    max_connections = _bounded(sources, "max_connections", DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_BOUNDS)
    if max_connections < max_requests:
        raise ConfigError(
            sources.where("max_connections"),
            f"must be at least --web.max-requests ({max_requests}), got {max_connections}",
        )
    textfile = _path(sources, "textfile_directory", None)
    if textfile is not None:
        textfile = _directory(textfile, sources.where("textfile_directory"), writable=True)
    log_level = str(sources.get("log_level", text, "info")).lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(sources.where("log_level"), f"must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    roots = {
        dest: _directory(_path(sources, dest, Path(default)) or Path(default), sources.where(dest))
        for dest, default in (("procfs", "/proc"), ("sysfs", "/sys"), ("rootfs", "/"))
    }
    node_name = str(sources.get("node_name", text, "")) or default_node_name()

    return DaemonConfig(
        daemon=daemon,
        listen=listen,
        web=web,
        web_config_file=web_file,
        max_requests=max_requests,
        max_connections=max_connections,
        textfile_directory=textfile,
        once=bool(args.once),
        node_name=node_name,
        proc_root=roots["procfs"],
        sys_root=roots["sysfs"],
        rootfs=roots["rootfs"],
        log_level=log_level,
        collectors=_collectors(classes, args, raw),
        check_only=bool(args.config_check),
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
