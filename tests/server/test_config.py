"""Server configuration: defaults < TOML file < OSPREY_* environment < CLI flags."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.cli import build_parser
from server.config import ServerConfig, load_config
from server.errors import ConfigError

from .process import REPO_ROOT


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """``~`` points at an empty folder: a developer's ~/.osprey/osprey.toml stays out."""
    home = tmp_path_factory.mktemp("user_home")
    monkeypatch.setenv("HOME", str(home))
    yield home


def write(tmp_path: Path, text: str, name: str = "osprey.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    config = load_config(env={"OSPREY_HOME": str(tmp_path)})
    assert config.host == "127.0.0.1"
    assert config.grpc_port == 8001
    assert config.metrics_port == 8002
    assert config.metrics is True
    assert config.reflection is False
    assert config.grace_seconds == 30.0
    assert config.log_level == "INFO"
    # 1M rows x 30 FP32 columns fit in one message
    assert config.max_message_bytes >= 1_000_000 * 30 * 4
    assert config.home == tmp_path
    assert config.models_path == tmp_path / "models"


def test_default_home_is_dot_osprey(isolated_home: Path) -> None:
    config = load_config(env={})
    assert config.home == isolated_home / ".osprey"
    assert ServerConfig().model_repository is None


def test_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "grpc_port = 9001\nmetrics = false\ngrace_seconds = 2.5\nreflection = true\n"
        'log_level = "debug"\nhost = "0.0.0.0"\nmodel_repository = "/srv/models"\n'
        "max_message_bytes = 4096\ninsecure = true\n",
        "custom.toml",
    )
    config = load_config(env={}, config_file=path)
    assert config.grpc_port == 9001
    assert config.metrics is False
    assert config.grace_seconds == 2.5
    assert config.reflection is True
    assert config.log_level == "DEBUG"
    assert config.host == "0.0.0.0"
    assert config.insecure is True  # plaintext on a non-loopback address needs it
    assert config.models_path == Path("/srv/models")
    assert config.max_message_bytes == 4096


def test_toml_file_found_in_home(tmp_path: Path) -> None:
    write(tmp_path, "grpc_port = 9100\n")
    assert load_config(env={"OSPREY_HOME": str(tmp_path)}).grpc_port == 9100
    assert load_config(cli={"home": str(tmp_path)}, env={}).grpc_port == 9100


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "grpc_port = 9001\nmetrics_port = 9002\n")
    config = load_config(env={"OSPREY_GRPC_PORT": "7001"}, config_file=path)
    assert config.grpc_port == 7001
    assert config.metrics_port == 9002


def test_env_values_are_coerced() -> None:
    config = load_config(
        env={
            "OSPREY_METRICS": "off",
            "OSPREY_REFLECTION": "yes",
            "OSPREY_GRACE_SECONDS": "0.5",
            "OSPREY_MODEL_REPOSITORY": "/m",
        }
    )
    assert config.metrics is False
    assert config.reflection is True
    assert config.grace_seconds == 0.5
    assert config.models_path == Path("/m")


def test_empty_env_value_is_ignored() -> None:
    assert load_config(env={"OSPREY_GRPC_PORT": ""}).grpc_port == 8001


def test_cli_beats_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "grpc_port = 9001\n")
    config = load_config(
        cli={"grpc_port": "6001", "metrics_port": None},
        env={"OSPREY_GRPC_PORT": "7001", "OSPREY_METRICS_PORT": "7002"},
        config_file=path,
    )
    assert config.grpc_port == 6001
    assert config.metrics_port == 7002  # a flag left unset (None) does not override


def test_cli_flags_parse(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["serve", "--grpc-port", "0", "--reflection", "--no-metrics", "--home", str(tmp_path)]
    )
    keys = set(ServerConfig.__dataclass_fields__)
    config = load_config(cli={k: v for k, v in vars(args).items() if k in keys}, env={})
    assert config.grpc_port == 0
    assert config.reflection is True
    assert config.metrics is False
    assert config.home == tmp_path


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "grpc_port = 1\ngrpc_prot = 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(env={}, config_file=path)
    assert "grpc_prot" in err.value.message and str(path) in err.value.message
    assert "unknown" in err.value.message


def test_unknown_cli_setting() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(cli={"frobnicate": 1}, env={})
    assert "frobnicate" in err.value.message


def test_missing_and_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env={}, config_file=tmp_path / "absent.toml")
    assert "absent.toml" in err.value.message and "does not exist" in err.value.message
    bad = write(tmp_path, "grpc_port = = 3\n", "bad.toml")
    with pytest.raises(ConfigError) as err:
        load_config(env={}, config_file=bad)
    assert "bad.toml" in err.value.message and "TOML" in err.value.message


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        (
            {"OSPREY_GRPC_PORT": "abc"},
            ["environment OSPREY_GRPC_PORT", "grpc_port", "integer", "'abc'"],
        ),
        (
            {"OSPREY_GRPC_PORT": "70000"},
            ["environment OSPREY_GRPC_PORT", "grpc_port", "65535", "70000"],
        ),
        ({"OSPREY_METRICS_PORT": "-1"}, ["environment OSPREY_METRICS_PORT", "metrics_port"]),
        ({"OSPREY_METRICS": "maybe"}, ["environment OSPREY_METRICS", "metrics", "true or false"]),
        (
            {"OSPREY_GRACE_SECONDS": "-1"},
            ["environment OSPREY_GRACE_SECONDS", "grace_seconds", ">= 0"],
        ),
        (
            {"OSPREY_GRACE_SECONDS": "nan"},
            ["environment OSPREY_GRACE_SECONDS", "grace_seconds", "finite"],
        ),
        ({"OSPREY_GRACE_SECONDS": "soon"}, ["environment OSPREY_GRACE_SECONDS", "number"]),
        (
            {"OSPREY_LOG_LEVEL": "chatty"},
            ["environment OSPREY_LOG_LEVEL", "log_level", "DEBUG", "chatty"],
        ),
        ({"OSPREY_HOST": "my host"}, ["environment OSPREY_HOST", "host", "'my host'"]),
        (
            {"OSPREY_MAX_MESSAGE_BYTES": "10"},
            ["environment OSPREY_MAX_MESSAGE_BYTES", "max_message_bytes", "1024", "10"],
        ),
    ],
)
def test_bad_env_value_names_key_and_origin(env: dict[str, str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    for fragment in fragments:
        assert fragment in err.value.message, (fragment, err.value.message)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("grpc_port = 1.5", ["grpc_port", "integer", "1.5"]),
        ('grpc_port = "x"', ["grpc_port", "integer"]),
        ("grpc_port = 99999", ["grpc_port", "65535", "99999"]),
        ("reflection = 3", ["reflection", "true or false"]),
        ("grace_seconds = -0.5", ["grace_seconds", ">= 0"]),
        ("grace_seconds = inf", ["grace_seconds", "finite"]),
        ("host = 127", ["host", "string"]),
        ('host = "example.com"', ["host", "IP address"]),
        ('home = ""', ["home", "path"]),
        ("log_level = 5", ["log_level", "string"]),
    ],
)
def test_bad_file_value_names_key_and_origin(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text + "\n", "bad.toml")
    with pytest.raises(ConfigError) as err:
        load_config(env={}, config_file=path)
    assert f"config file {path}" in err.value.message
    for fragment in fragments:
        assert fragment in err.value.message, (fragment, err.value.message)


def test_bad_flag_value_names_flag() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(cli={"grpc_port": "-3"}, env={})
    assert "flag --grpc-port" in err.value.message and "-3" in err.value.message
    with pytest.raises(ConfigError) as err:
        load_config(cli={"max_message_bytes": "lots"}, env={})
    assert "flag --max-message-bytes" in err.value.message and "integer" in err.value.message


def test_whole_float_is_an_integer(tmp_path: Path) -> None:
    path = write(tmp_path, "grpc_port = 9001.0\n")
    assert load_config(env={}, config_file=path).grpc_port == 9001


def test_cli_error_is_reported_without_traceback(tmp_path: Path) -> None:
    # A subprocess: `osprey serve` imports our stubs, which must not meet tritonclient's
    # in this process (DESIGN.md, "Interfaces").
    done = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--home", str(tmp_path), "--grpc-port", "http"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OSPREY_HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert "osprey: error:" in done.stderr
    assert "flag --grpc-port" in done.stderr and "'http'" in done.stderr
    assert "Traceback" not in done.stderr
