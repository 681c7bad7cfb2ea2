"""``server.tls`` in process: the binding rule, certificate checks, reload semantics."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest

from server.config import load_config
from server.errors import ConfigError
from server.tls import CertificateFiles, ReloadingServerCredentials, is_loopback

from .certs import CertificateAuthority


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("Osprey Test CA")


@pytest.fixture
def files(ca: CertificateAuthority, tmp_path: Path) -> CertificateFiles:
    cert, key = ca.issue("osprey-server", server=True).write(tmp_path, "server")
    return CertificateFiles(cert, key, ca.write(tmp_path, "ca"))


def config_error(tmp_path: Path, **cli: str | bool) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(cli=cli, env={"OSPREY_HOME": str(tmp_path)})
    return err.value.message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
     ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
     ("192.168.0.1", False), ("fe80::1", False), ("example.com", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_non_loopback_plaintext_needs_tls_or_insecure(tmp_path: Path, host: str) -> None:
    message = config_error(tmp_path, host=host)
    assert host in message and "--tls-cert" in message and "--insecure" in message
    assert load_config(cli={"host": host, "insecure": True},
                       env={"OSPREY_HOME": str(tmp_path)}).insecure is True


def test_tls_settings_through_the_environment(
    tmp_path: Path, files: CertificateFiles
) -> None:
    config = load_config(env={
        "OSPREY_HOME": str(tmp_path), "OSPREY_HOST": "0.0.0.0",
        "OSPREY_TLS_CERT": str(files.cert), "OSPREY_TLS_KEY": str(files.key),
        "OSPREY_TLS_CLIENT_CA": str(files.client_ca), "OSPREY_ADMIN_SUBJECTS": "ops, sre",
    })
    assert (config.tls_cert, config.tls_key, config.tls_client_ca) == (
        files.cert, files.key, files.client_ca)
    assert config.admin_subjects == "ops, sre" and config.insecure is False


def test_incomplete_tls_settings(tmp_path: Path, files: CertificateFiles) -> None:
    message = config_error(tmp_path, tls_cert=str(files.cert))
    assert "flag --tls-cert" in message and "'tls_key' is not" in message
    message = config_error(tmp_path, tls_key=str(files.key))
    assert "'tls_cert' is not" in message
    message = config_error(tmp_path, tls_client_ca=str(files.client_ca))
    assert "tls_client_ca" in message and "--tls-cert" in message


def test_unreadable_and_invalid_files_are_named(
    tmp_path: Path, files: CertificateFiles, ca: CertificateAuthority
) -> None:
    missing = tmp_path / "nope.pem"
    message = config_error(tmp_path, tls_cert=str(missing), tls_key=str(files.key))
    assert str(missing) in message and "cannot read" in message

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    message = config_error(tmp_path, tls_cert=str(not_pem), tls_key=str(files.key))
    assert str(not_pem) in message and "no PEM certificate" in message

    _, other_key = ca.issue("other", server=True).write(tmp_path, "other")
    message = config_error(tmp_path, tls_cert=str(files.cert), tls_key=str(other_key))
    assert str(other_key) in message and "matches the certificate" in message

    message = config_error(
        tmp_path, tls_cert=str(files.cert), tls_key=str(files.key), tls_client_ca=str(not_pem)
    )
    assert str(not_pem) in message and "tls_client_ca" in message


def test_fingerprint_is_the_certificates(files: CertificateFiles) -> None:
    pair = files.load()
    der = ssl.PEM_cert_to_DER_cert(files.cert.read_text())
    assert pair.fingerprint.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert pair.client_ca == files.client_ca.read_bytes()  # type: ignore[union-attr]


def test_reload_hands_new_certificates_over_once(
    files: CertificateFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = ReloadingServerCredentials(files)
    assert credentials.mutual is True
    first = credentials.current.fingerprint
    assert credentials._fetch() is None  # nothing new: gRPC keeps what it has

    other = CertificateAuthority("Next CA").issue("osprey-server", server=True)
    files.cert.write_bytes(other.cert_pem)
    files.key.write_bytes(other.key_pem)
    assert credentials.reload() is True
    assert credentials.current.fingerprint != first
    assert credentials._fetch() is not None  # the next handshake takes it ...
    assert credentials._fetch() is None  # ... once

    files.cert.write_text("garbage")
    assert credentials.reload() is False
    assert "keeping the previous certificates" in caplog.text
    assert credentials._fetch() is None
    assert credentials.current.fingerprint != first  # still the reloaded one


def test_exposed_private_key_is_warned_about(
    files: CertificateFiles, caplog: pytest.LogCaptureFixture
) -> None:
    files.key.chmod(0o644)
    ReloadingServerCredentials(files)
    assert f"chmod 600 {files.key}" in caplog.text
