"""The Prometheus exporter-toolkit web configuration file: TLS, basic auth and response headers.

Supported keys: ``tls_server_config`` (``cert_file``, ``key_file``, optional ``client_ca_file`` and
``client_auth_type`` of ``NoClientCert`` or ``RequireAndVerifyClientCert``, ``min_version`` of ``TLS12`` or
``TLS13``), ``basic_auth_users`` (user name to bcrypt hash) and ``http_server_config`` (``headers``: the five
security headers exporter-toolkit allows; ``http2`` is accepted, but the exporters speak HTTP/1.1 only, which every
Prometheus does). Relative paths are read from the file's directory, as node_exporter does.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.files import read_yaml_mapping

FLAG = "--web.config.file"
_BCRYPT = re.compile(r"^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$")
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}
_CLIENT_AUTH = {"NoClientCert", "RequireAndVerifyClientCert"}
_MIN_VERSION = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_HEADERS: dict[str, frozenset[str] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
"""The response headers exporter-toolkit lets a web configuration set, with the values it accepts (None: any)."""


class EncryptedKeyError(Exception):
    """OpenSSL asked for a passphrase: the key file is encrypted."""


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal, or fail with a bare "[Errno 22] Invalid argument".
    raise EncryptedKeyError


@dataclass(frozen=True)
class TLSConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    require_client_cert: bool = False
    min_version: str = "TLS12"

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _MIN_VERSION[self.min_version]
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file), password=_no_passphrase)
        if self.client_ca_file is not None:
            ctx.load_verify_locations(str(self.client_ca_file))
        if self.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    basic_auth_users: dict[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    """Extra response headers from ``http_server_config.headers``."""


def _file(base: Path, key: str, value: object) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(FLAG, f"{key} must be a file path")
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(FLAG, f"{key} {path} does not exist or is not a file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(FLAG, f"cannot read {key} {path}: {exc.strerror}") from None
    return path


def _tls(base: Path, raw: object) -> TLSConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(FLAG, "tls_server_config must be a mapping")
    unknown = set(raw) - _TLS_KEYS
    if unknown:
        raise ConfigError(FLAG, f"unknown tls_server_config keys: {', '.join(sorted(unknown))}")
    if "cert_file" not in raw or "key_file" not in raw:
        raise ConfigError(FLAG, "tls_server_config needs both cert_file and key_file")
    auth = raw.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise ConfigError(FLAG, f"client_auth_type must be one of {sorted(_CLIENT_AUTH)}, got {auth!r}")
    min_version = raw.get("min_version", "TLS12")
    if min_version not in _MIN_VERSION:
        raise ConfigError(FLAG, f"min_version must be one of {sorted(_MIN_VERSION)}, got {min_version!r}")
    ca = _file(base, "client_ca_file", raw["client_ca_file"]) if raw.get("client_ca_file") else None
    if auth == "RequireAndVerifyClientCert" and ca is None:
        raise ConfigError(FLAG, "client_auth_type RequireAndVerifyClientCert needs client_ca_file")
    tls = TLSConfig(
        cert_file=_file(base, "cert_file", raw["cert_file"]),
        key_file=_file(base, "key_file", raw["key_file"]),
        client_ca_file=ca,
        require_client_cert=auth == "RequireAndVerifyClientCert",
        min_version=min_version,
    )
    try:
        tls.context()
    except EncryptedKeyError:
        raise ConfigError(
            FLAG,
            f"key_file {tls.key_file} is encrypted, and the web configuration has no passphrase: store the key "
            "unencrypted (openssl pkey -in KEY -out PLAIN), readable only by the exporter's user",
        ) from None
    except ssl.SSLError as exc:
        raise ConfigError(
            FLAG,
            f"cannot use cert_file {tls.cert_file} with key_file {tls.key_file}"
            f"{' and client_ca_file ' + str(ca) if ca else ''}: they must be PEM files and the key must belong to "
            f"the certificate (OpenSSL: {exc.reason or exc})",
        ) from None
    except OSError as exc:
        raise ConfigError(FLAG, f"cannot load the TLS certificate or key: {exc.strerror or exc}") from None
    return tls


def _users(raw: object) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(FLAG, "basic_auth_users must be a mapping of user name to bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(FLAG, f"basic_auth_users: invalid user name {user!r}")
        if not isinstance(hashed, str) or not _BCRYPT.match(hashed):
            raise ConfigError(FLAG, f"basic_auth_users: the password of {user!r} is not a bcrypt hash")
        users[user] = hashed.encode()
    return users


def _http_server(raw: object) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(FLAG, "http_server_config must be a mapping")
    unknown = set(raw) - {"http2", "headers"}
    if unknown:
        raise ConfigError(FLAG, f"unknown http_server_config keys: {', '.join(sorted(map(str, unknown)))}")
    if "http2" in raw and not isinstance(raw["http2"], bool):
        raise ConfigError(FLAG, f"http_server_config.http2 must be true or false, got {raw['http2']!r}")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigError(FLAG, "http_server_config.headers must be a mapping of header name to value")
    chosen: list[tuple[str, str]] = []
    for name, value in headers.items():
        if name not in _HEADERS:
            raise ConfigError(FLAG, f"http_server_config.headers: {name!r} is not one of {', '.join(_HEADERS)}")
        if value is None or value == "":
            continue  # blank means unset, as in exporter-toolkit
        allowed = _HEADERS[name]
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ConfigError(FLAG, f"http_server_config.headers.{name} must be a one-line string")
        if allowed is not None and value.lower() not in allowed:
            raise ConfigError(FLAG, f"http_server_config.headers.{name} must be one of {', '.join(sorted(allowed))}")
        chosen.append((name, value))
    return tuple(chosen)


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web configuration file; raise :class:`ConfigError` on any problem."""
    raw = read_yaml_mapping(path, FLAG)
    unknown = set(raw) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise ConfigError(FLAG, f"unknown keys in {path}: {', '.join(sorted(map(str, unknown)))}")
    return WebConfig(
        tls=_tls(path.parent, raw.get("tls_server_config")),
        basic_auth_users=_users(raw.get("basic_auth_users")),
        headers=_http_server(raw.get("http_server_config")),
    )
