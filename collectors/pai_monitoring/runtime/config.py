"""One typed, validated configuration per daemon, built from flags and an optional YAML file.

Flags win over the YAML file, which wins over defaults. Every problem raises :class:`ConfigError` naming the flag,
so ``main`` can exit 2 before any port is bound or any collector is built.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pai_monitoring import __version__
from pai_monitoring.registry import CollectorClass
from pai_monitoring.runtime.collector import CollectorOptions, default_node_name
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.options import build_options, dest_name, flag_name, option_fields
from pai_monitoring.runtime.webconfig import WebConfig, load_web_config

DEFAULT_MAX_REQUESTS = 10
LOG_LEVELS = ("debug", "info", "warning", "error")
_TOP_KEYS = {"web", "textfile", "node_name", "path", "log", "collectors"}
_SECTION_KEYS = {
    "web": {"listen_address", "config_file", "max_requests"},
    "textfile": {"directory"},
    "path": {"procfs", "sysfs", "rootfs"},
    "log": {"level"},
}


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
    textfile_directory: Path | None
    once: bool
    node_name: str
    proc_root: Path
    sys_root: Path
    rootfs: Path
    log_level: str
    collectors: dict[str, CollectorOptions] = field(default_factory=dict)
    """Options of the enabled collectors only, in registry order."""


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
    parser = argparse.ArgumentParser(
        prog=daemon,
        description=f"{daemon}: Prometheus exporter of the pai-monitoring suite.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"{daemon} {__version__}")
    parser.add_argument("--config.file", dest="config_file", type=Path, help="YAML configuration file; flags win")
    parser.add_argument(
        "--web.listen-address", dest="listen_address", help=f"address to serve HTTP on (default :{default_port})"
    )
    parser.add_argument("--web.config.file", dest="web_config_file", help="TLS and basic auth configuration (YAML)")
    parser.add_argument(
        "--web.max-requests",
        dest="max_requests",
        help=f"concurrent HTTP requests served; more are answered 503 (default {DEFAULT_MAX_REQUESTS})",
    )
    parser.add_argument(
        "--textfile.directory", dest="textfile_directory", help="also write the metrics into this textfile directory"
    )
    parser.add_argument("--once", action="store_true", help="collect once, print the metrics, exit 0 if all succeeded")
    parser.add_argument("--node-name", dest="node_name", help="this node's name (default $NODE_NAME or the hostname)")
    parser.add_argument("--path.procfs", dest="procfs", help="procfs mount point (default /proc)")
    parser.add_argument("--path.sysfs", dest="sysfs", help="sysfs mount point (default /sys)")
    parser.add_argument("--path.rootfs", dest="rootfs", help="root filesystem mount point (default /)")
    parser.add_argument("--log.level", dest="log_level", help=f"one of {', '.join(LOG_LEVELS)} (default info)")
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
            default = fld.default if fld.default is not fld.default_factory else None
            group.add_argument(
                flag_name(name, fld.name),
                dest=dest_name(name, fld.name),
                metavar="VALUE",
                help=f"{fld.metadata.get('help', '')} (default {default})",
            )
    return parser


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--config.file", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("--config.file", f"{path} is not valid YAML: {exc}") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("--config.file", f"{path} must hold a mapping")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError("--config.file", f"unknown keys in {path}: {', '.join(sorted(map(str, unknown)))}")
    for section, keys in _SECTION_KEYS.items():
        value = raw.get(section) or {}
        if not isinstance(value, dict):
            raise ConfigError("--config.file", f"{section} must be a mapping")
        bad = set(value) - keys
        if bad:
            raise ConfigError("--config.file", f"unknown keys in {section}: {', '.join(sorted(map(str, bad)))}")
    return raw


def _pick(flag_value: object, yaml_raw: Mapping[str, Any], section: str, key: str) -> object:
    if flag_value is not None:
        return flag_value
    if section:
        return (yaml_raw.get(section) or {}).get(key)
    return yaml_raw.get(key)


def _positive_int(value: object, flag: str) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(flag, f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise ConfigError(flag, f"must be at least 1, got {number}")
    return number


def _directory(value: object, flag: str, *, writable: bool = False) -> Path:
    path = Path(str(value))
    if not path.is_dir():
        raise ConfigError(flag, f"{path} does not exist or is not a directory")
    if writable:
        import os

        if not os.access(path, os.W_OK):
            raise ConfigError(flag, f"{path} is not writable by this user")
    return path


def build_config(
    daemon: str, default_port: int, classes: Mapping[str, CollectorClass], argv: Sequence[str] | None
) -> DaemonConfig:
    """Parse and validate everything. argparse errors exit 2 themselves; the rest raises :class:`ConfigError`."""
    args = build_parser(daemon, default_port, classes).parse_args(argv)
    raw = _load_yaml(args.config_file) if args.config_file else {}

    listen = parse_listen_address(str(_pick(args.listen_address, raw, "web", "listen_address") or f":{default_port}"))
    web_file_value = _pick(args.web_config_file, raw, "web", "config_file")
    web_file = Path(str(web_file_value)) if web_file_value else None
    web = load_web_config(web_file) if web_file else WebConfig()
    max_requests = _positive_int(
        _pick(args.max_requests, raw, "web", "max_requests") or DEFAULT_MAX_REQUESTS, "--web.max-requests"
    )
    textfile_value = _pick(args.textfile_directory, raw, "textfile", "directory")
    textfile = _directory(textfile_value, "--textfile.directory", writable=True) if textfile_value else None
    log_level = str(_pick(args.log_level, raw, "log", "level") or "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError("--log.level", f"must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    procfs = _directory(_pick(args.procfs, raw, "path", "procfs") or "/proc", "--path.procfs")
    sysfs = _directory(_pick(args.sysfs, raw, "path", "sysfs") or "/sys", "--path.sysfs")
    rootfs = _directory(_pick(args.rootfs, raw, "path", "rootfs") or "/", "--path.rootfs")

    yaml_collectors = raw.get("collectors") or {}
    if not isinstance(yaml_collectors, dict):
        raise ConfigError("--config.file", "collectors must be a mapping of collector name to options")
    unknown = set(yaml_collectors) - set(classes)
    if unknown:
        raise ConfigError("--config.file", f"unknown collectors: {', '.join(sorted(map(str, unknown)))}")
    flags = vars(args)
    enabled: dict[str, CollectorOptions] = {}
    for name, cls in classes.items():
        section = yaml_collectors.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"collectors.{name}", "must be a mapping of options")
        on = flags[dest_name(name, "enabled")]
        if on is None:
            on = bool(section.get("enabled", cls.default_enabled))
        if not on:
            continue
        from_flags = {f.name: flags[dest_name(name, f.name)] for f, _tp in option_fields(cls.options_class)}
        enabled[name] = build_options(name, cls.options_class, from_flags, section)

    return DaemonConfig(
        daemon=daemon,
        listen=listen,
        web=web,
        web_config_file=web_file,
        max_requests=max_requests,
        textfile_directory=textfile,
        once=bool(args.once),
        node_name=str(_pick(args.node_name, raw, "", "node_name") or default_node_name()),
        proc_root=procfs,
        sys_root=sysfs,
        rootfs=rootfs,
        log_level=log_level,
        collectors=enabled,
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
