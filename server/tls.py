"""Transport security: the plaintext-binding rule, TLS / mutual TLS credentials, reload.

Certificates come from PEM files (``tls_cert``, ``tls_key``, optionally
``tls_client_ca`` for mutual TLS). The gRPC credentials are *dynamic*: gRPC asks
``ReloadingServerCredentials`` before every new TLS handshake whether the
certificates changed, so after ``reload()`` (the server calls it on SIGHUP) new
connections use the re-read files while open connections keep theirs. A reload
whose files do not load keeps the previous certificates and says why in the log.

Files are checked with the standard library's ``ssl`` (OpenSSL) before gRPC sees
them: a certificate that does not parse, a key that does not match its
certificate, or an encrypted key is refused with a message naming the files.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from .auth import is_private
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import ServerConfig

log = logging.getLogger("osprey.server")

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL
)


def _quoted(name: str) -> str:
    return f"'{name}'"


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (also IPv4-mapped loopback)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def validate_tls_settings(
    config: ServerConfig, key: Callable[[str], str] = _quoted
) -> None:
    """Refuse incomplete TLS settings, unreadable certificate files and plaintext exposure.

    ``key`` renders a setting's name with where its value came from (for messages).
    """
    if (config.tls_cert is None) != (config.tls_key is None):
        given, missing = ("tls_cert", "tls_key") if config.tls_key is None else (
            "tls_key", "tls_cert")
        raise ConfigError(
            f"{key(given)} is set but {key(missing)} is not: TLS needs both the certificate "
            f"(--tls-cert) and its private key (--tls-key)"
        )
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError(
            f"{key('tls_client_ca')} needs TLS: set --tls-cert and --tls-key as well"
        )
    if config.tls_cert is None and not config.insecure and not is_loopback(config.host):
        raise ConfigError(
            f"refusing to serve plaintext gRPC on {config.host} ({key('host')}), which is not "
            f"a loopback address: configure TLS with --tls-cert and --tls-key "
            f"(OSPREY_TLS_CERT, OSPREY_TLS_KEY), or pass --insecure (OSPREY_INSECURE=1) to "
            f"accept unencrypted, unauthenticated connections from the network"
        )
    files = CertificateFiles.from_config(config)
    if files is not None:
        files.load(key)


@dataclass(frozen=True)
class CertificatePair:
    """What one read of the certificate files gave, checked and ready for gRPC."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the leaf certificate (DER), as ``openssl x509 -fingerprint`` shows it."""
        match = _PEM_CERT.search(self.cert_chain)
        assert match is not None  # checked when loaded
        der = ssl.PEM_cert_to_DER_cert(match.group(0).decode("ascii"))
        return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())

    def grpc_configuration(self) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(self.private_key, self.cert_chain)], root_certificates=self.client_ca
        )


@dataclass(frozen=True)
class CertificateFiles:
    """The PEM files of the server's TLS identity and, for mutual TLS, the client CA."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def from_config(cls, config: ServerConfig) -> CertificateFiles | None:
        if config.tls_cert is None or config.tls_key is None:
            return None
        return cls(config.tls_cert, config.tls_key, config.tls_client_ca)

    def load(self, key: Callable[[str], str] = _quoted) -> CertificatePair:
        """Read and check every file; ConfigError naming the file if anything is wrong."""
        cert = _read(self.cert, key("tls_cert"))
        private_key = _read(self.key, key("tls_key"))
        if not _PEM_CERT.search(cert):
            raise ConfigError(
                f"{key('tls_cert')} {self.cert}: no PEM certificate "
                f"('-----BEGIN CERTIFICATE-----') in the file"
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # An empty password makes an encrypted key fail here instead of prompting.
            context.load_cert_chain(self.cert, self.key, password=b"")
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{key('tls_cert')} {self.cert} / {key('tls_key')} {self.key}: cannot load the "
                f"key pair ({_reason(exc)}); the key must be an unencrypted PEM private key "
                f"that matches the certificate"
            ) from None
        # ``ssl`` reads by path: make sure it checked the bytes gRPC is about to get.
        if _read(self.cert, key("tls_cert")) != cert or _read(self.key, key("tls_key")) != (
            private_key
        ):
            raise ConfigError(
                f"{key('tls_cert')} {self.cert} / {key('tls_key')} {self.key} changed while "
                f"being read; try again once they are written"
            )
        client_ca = None
        if self.client_ca is not None:
            client_ca = _read(self.client_ca, key("tls_client_ca"))
            try:
                context.load_verify_locations(cadata=client_ca.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
                raise ConfigError(
                    f"{key('tls_client_ca')} {self.client_ca}: not a PEM CA certificate "
                    f"bundle ({_reason(exc)})"
                ) from None
        return CertificatePair(cert, private_key, client_ca)


def _read(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name} {path}: cannot read ({exc.strerror or exc})") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return str(exc) or type(exc).__name__


class ReloadingServerCredentials:
    """gRPC server credentials whose certificates can be re-read while serving.

    gRPC calls ``_fetch`` from its own threads before each new handshake; it hands
    over a newly loaded configuration once and otherwise answers "no change".
    """

    def __init__(self, files: CertificateFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._pending: Any = None
        self.current = files.load()
        _warn_if_key_exposed(files.key)
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self.current.grpc_configuration(),
            self._fetch,
            require_client_authentication=files.client_ca is not None,
        )

    @classmethod
    def from_config(cls, config: ServerConfig) -> ReloadingServerCredentials | None:
        """Credentials for ``config``'s TLS files, or None when TLS is off."""
        files = CertificateFiles.from_config(config)
        return None if files is None else cls(files)

    @property
    def mutual(self) -> bool:
        return self.files.client_ca is not None

    def describe(self) -> str:
        what = "mutual TLS (client certificates required)" if self.mutual else "TLS"
        return f"{what}, certificate {self.files.cert} (sha256 {self.current.fingerprint})"

    def reload(self) -> bool:
        """Re-read the files for new connections; on failure keep the old ones and log."""
        try:
            loaded = self.files.load()
        except ConfigError as exc:
            log.error("TLS reload failed, keeping the previous certificates: %s", exc.message)
            return False
        configuration = loaded.grpc_configuration()
        with self._lock:
            self._pending = configuration
            self.current = loaded
        _warn_if_key_exposed(self.files.key)
        log.info(
            "TLS certificates reloaded from %s (sha256 %s); new connections use them",
            self.files.cert,
            loaded.fingerprint,
        )
        return True

    def _fetch(self) -> Any:
        with self._lock:
            pending, self._pending = self._pending, None
        return pending


def _warn_if_key_exposed(path: Path) -> None:
    try:
        info = path.stat()
    except OSError:
        return
    if not is_private(info):
        log.warning(
            "TLS private key %s is accessible by group or others (mode %04o); "
            "run chmod 600 %s",
            path,
            info.st_mode & 0o777,
            path,
        )
