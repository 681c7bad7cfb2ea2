"""Server configuration: defaults < config file < ``OSPREY_*`` environment < CLI flags.

The config file is TOML with the keys of ``ServerConfig`` (``--config FILE``, else
``$OSPREY_HOME/osprey.toml`` when it exists). Every key can be overridden by the
environment variable ``OSPREY_<KEY>`` (upper case) and by the flag ``--<key>``
(dashes for underscores). Everything is validated at start with errors that name
the key, where it came from, and what was wrong.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auth import validate_auth_settings
from .errors import ConfigError
from .tls import validate_tls_settings

DEFAULT_HOME = Path("~/.osprey")
CONFIG_FILE_NAME = "osprey.toml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class ServerConfig:
    """Validated settings of one ``osprey serve`` process."""

    home: Path = DEFAULT_HOME
    model_repository: Path | None = None  # default: <home>/models
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    metrics_port: int = 8002  # 0 picks a free port
    metrics: bool = True
    grace_seconds: float = 30.0
    reflection: bool = False
    workers: int = 1  # processes sharing the gRPC port (SO_REUSEPORT)
    # 1M rows x 30 FP32 columns is 120 MB; leave room for BYTES columns.
    max_message_bytes: int = 512 * 1024 * 1024
    log_level: str = "INFO"
    # Security (server/tls.py, server/auth.py; README "Security").
    tls_cert: Path | None = None  # PEM certificate chain; TLS is on when set
    tls_key: Path | None = None  # its PEM private key
    tls_client_ca: Path | None = None  # PEM CA bundle: clients must present a cert it signed
    insecure: bool = False  # allow plaintext gRPC on a non-loopback address
    admin_token_file: Path | None = None  # bearer token for control RPCs (mode 0600)
    admin_subjects: str = ""  # comma-separated client-certificate CNs allowed control RPCs
    client_token_file: Path | None = None  # bearer token inference RPCs then require
    # The model registry (registry/; README "Deploying versions").
    database_url: str = ""  # empty: sqlite:///<home>/osprey.db
    artifact_store: str = "local"  # local (<home>/artifacts) | sql (in the database)
    registry_poll_seconds: float = 2.0  # how often a server re-reads the deployments
    rollback_window_seconds: float = 600.0  # the previous stable version stays loaded
    # The audit log (server/audit_spool.py; README "Auditing decisions").
    audit: str = "strict"  # strict | relaxed | off
    audit_key_file: Path | None = None  # default <home>/audit.key (created, mode 0600)
    # keyed hashes of personal-data columns (default <home>/audit-pii.key, created)
    audit_pii_key_file: Path | None = None
    audit_spool_dir: Path | None = None  # default <home>/audit-spool
    audit_spool_max_bytes: int = 1 << 30  # while the database is away
    audit_when_full: str = "refuse"  # refuse (UNAVAILABLE) | relax (stop waiting for fsync)
    # sidecar: each server process starts `osprey audit ship --follow` beside it;
    # external: something else ships the spool (a container of its own on Kubernetes)
    audit_shipper: str = "sidecar"

    @property
    def models_path(self) -> Path:
        return self.model_repository or self.home / "models"


_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}


def _coerce(key: str, value: Any, origin: str) -> Any:
    """Convert ``value`` (from TOML, env or CLI) to ``key``'s type, or ConfigError."""
    kind = _FIELDS[key].type
    where = f"{origin}: '{key}'"
    if kind in ("Path", "Path | None"):
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError(f"{where} must be a path, got {value!r}")
        return Path(str(value)).expanduser()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind == "int":
        # int(1.5) would silently truncate a TOML float: only whole numbers pass.
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _validate(config: ServerConfig, origins: Mapping[str, str] | None = None) -> ServerConfig:
    """Range checks; ``origins`` maps a key to where its value came from (for messages)."""
    origins = origins or {}

    def key(name: str) -> str:
        return f"{origins[name]}: '{name}'" if name in origins else f"'{name}'"

    for name in ("grpc_port", "metrics_port"):
        port = getattr(config, name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{key(name)} must be between 0 and 65535, got {port}")
    if not 1 <= config.workers <= 256:
        raise ConfigError(f"{key('workers')} must be between 1 and 256, got {config.workers}")
    if config.grace_seconds < 0:
        raise ConfigError(f"{key('grace_seconds')} must be >= 0, got {config.grace_seconds}")
    if config.max_message_bytes < 1024 or config.max_message_bytes > 2**31 - 1:
        raise ConfigError(
            f"{key('max_message_bytes')} must be between 1024 and {2**31 - 1} (gRPC's limit), "
            f"got {config.max_message_bytes}"
        )
    if config.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(
            f"{key('log_level')} must be one of {', '.join(LOG_LEVELS)}, got {config.log_level!r}"
        )
    if config.host != "localhost":
        try:
            ipaddress.ip_address(config.host)
        except ValueError:
            raise ConfigError(
                f"{key('host')} must be an IP address or 'localhost', got {config.host!r}"
            ) from None
    if config.artifact_store not in ("local", "sql"):
        raise ConfigError(
            f"{key('artifact_store')} must be 'local' or 'sql', got {config.artifact_store!r}"
        )
    if not 0.05 <= config.registry_poll_seconds <= 3600:
        raise ConfigError(
            f"{key('registry_poll_seconds')} must be between 0.05 and 3600, got "
            f"{config.registry_poll_seconds}"
        )
    if config.rollback_window_seconds < 0:
        raise ConfigError(
            f"{key('rollback_window_seconds')} must be >= 0, got {config.rollback_window_seconds}"
        )
    if config.audit not in ("strict", "relaxed", "off"):
        raise ConfigError(f"{key('audit')} must be strict, relaxed or off, got {config.audit!r}")
    if config.audit_shipper not in ("sidecar", "external"):
        raise ConfigError(
            f"{key('audit_shipper')} must be sidecar or external, got {config.audit_shipper!r}"
        )
    if config.audit_when_full not in ("refuse", "relax"):
        raise ConfigError(
            f"{key('audit_when_full')} must be refuse or relax, got {config.audit_when_full!r}"
        )
    if config.audit_spool_max_bytes < 1 << 20:
        raise ConfigError(
            f"{key('audit_spool_max_bytes')} must be at least 1 MiB, got "
            f"{config.audit_spool_max_bytes}"
        )
    validate_tls_settings(config, key)
    validate_auth_settings(config, key)
    return dataclasses.replace(config, log_level=config.log_level.upper())


def load_config(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> ServerConfig:
    """Merge the layers and validate. ``cli`` holds only flags the user set."""
    env = os.environ if env is None else env
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}  # key -> where its value came from

    home_raw = cli.get("home") or env.get("OSPREY_HOME") or str(DEFAULT_HOME)
    home = Path(str(home_raw)).expanduser()
    path = config_file
    if path is None and (home / CONFIG_FILE_NAME).is_file():
        path = home / CONFIG_FILE_NAME
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ConfigError(
                f"config file {path}: unknown key(s) {', '.join(unknown)}; known keys: "
                f"{', '.join(_FIELDS)}"
            )
        for key, value in data.items():
            origins[key] = f"config file {path}"
            values[key] = _coerce(key, value, origins[key])
    for key in _FIELDS:
        name = f"OSPREY_{key.upper()}"
        if name in env and env[name] != "":
            origins[key] = f"environment {name}"
            values[key] = _coerce(key, env[name], origins[key])
    for key, value in cli.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting '{key}'")
        origins[key] = f"flag --{key.replace('_', '-')}"
        values[key] = _coerce(key, value, origins[key])
    values.setdefault("home", home)
    return _validate(ServerConfig(**values), origins)
