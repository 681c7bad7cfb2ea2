"""Who may call what: admin identity for control RPCs, an optional client token for inference.

Every RPC falls in one of three classes (``access_of``):

- **control** (``CONTROL_METHODS``: RepositoryModelLoad/Unload, and whatever later
  code registers with ``register_control_methods``) needs an admin identity: the
  bearer token of ``admin_token_file`` in ``authorization: Bearer <token>``, or a
  mutual-TLS client certificate whose subject CN is on ``admin_subjects``. With
  neither configured, control RPCs are refused, also on loopback.
- **inference** (``INFERENCE_METHODS``: ModelInfer, ModelStreamInfer) needs the
  token of ``client_token_file`` when one is configured, else nothing.
- **open**: everything else (health, metadata, readiness, statistics).

No credentials → UNAUTHENTICATED; wrong credentials → PERMISSION_DENIED. Tokens
are compared in constant time (``hmac.compare_digest`` over SHA-256 digests, so
neither content nor length leaks) and never logged: the log names a caller as
"admin token", "client token" or "cert CN=…".
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import hashlib
import hmac
import inspect
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from .errors import ConfigError, PermissionDenied, Unauthenticated
from .status import status_for

if TYPE_CHECKING:
    from .config import ServerConfig

log = logging.getLogger("osprey.server")

# The metadata of the RPC this task serves, as the interceptor already has it: the
# servicer reads it from here (for the audit log's caller) instead of asking gRPC to
# build the tuple again. None outside an intercepted RPC (the workers' peer socket).
CALL_METADATA: contextvars.ContextVar[Sequence[tuple[str, Any]] | None] = (
    contextvars.ContextVar("osprey_call_metadata", default=None))

_SERVICE = "/inference.GRPCInferenceService/"
CONTROL_METHODS: set[str] = {
    _SERVICE + "RepositoryModelLoad",
    _SERVICE + "RepositoryModelUnload",
}
"""Full method names (``/package.Service/Method``) that need an admin identity.

An entry ending in ``/`` (``/osprey.v1.Admin/``) covers every method of that service.
"""
INFERENCE_METHODS: set[str] = {
    _SERVICE + "ModelInfer",
    _SERVICE + "ModelStreamInfer",
}
"""Full method names that need the client token when ``client_token_file`` is set."""

ADMIN_TOKEN_FILE_NAME = "admin.token"
AUTHORIZATION = "authorization"
MIN_TOKEN_CHARS = 16

NO_ADMIN_CONFIGURED = (
    "control RPCs are disabled: this server has no admin identity configured. Start it "
    "with --admin-token-file FILE (OSPREY_ADMIN_TOKEN_FILE; a mode-0600 file holding a "
    "secret token, sent as 'authorization: Bearer <token>'), or with mutual TLS "
    "(--tls-client-ca) and --admin-subjects CN[,CN...]"
)


class Access(enum.Enum):
    """What an RPC needs from its caller."""

    OPEN = "open"
    INFERENCE = "inference"
    CONTROL = "control"


def register_control_methods(*methods: str) -> None:
    """Make more RPCs control RPCs: ``/package.Service/Method``, or ``/package.Service/``."""
    for method in methods:
        if not method.startswith("/") or method.count("/") != 2:
            raise ValueError(f"not a full gRPC method name: {method!r}")
        CONTROL_METHODS.add(method)


def access_of(method: str) -> Access:
    """The class of the RPC with full name ``method`` (``/package.Service/Method``)."""
    if method in CONTROL_METHODS or method[: method.rfind("/") + 1] in CONTROL_METHODS:
        return Access.CONTROL
    if method in INFERENCE_METHODS:
        return Access.INFERENCE
    return Access.OPEN


def short_name(method: str) -> str:
    """``/inference.GRPCInferenceService/ModelInfer`` → ``ModelInfer``."""
    return method.rsplit("/", 1)[-1]


# -- tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """A bearer token read from a file; only its digest is kept for comparisons."""

    path: Path
    digest: bytes = field(repr=False)
    chars: int

    @classmethod
    def of(cls, value: str, path: Path) -> Token:
        return cls(path, hashlib.sha256(value.encode()).digest(), len(value))

    def matches(self, presented: str) -> bool:
        """Constant-time comparison (of SHA-256 digests: lengths do not leak either)."""
        candidate = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(candidate, self.digest)


def is_private(info: os.stat_result) -> bool:
    """Whether a secret file with this ``stat`` is safe to use (PostgreSQL's key-file rule).

    Nobody but the owner may access it (0600 or stricter), except that a file owned
    by root may also be readable by its group (0640): that is how Kubernetes mounts
    a secret for a non-root container (``fsGroup``), and how root shares a key with a
    service's group on purpose.
    """
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == 0:
        return not mode & 0o037
    return not mode & 0o077


def read_token_file(path: Path, name: str) -> Token:
    """The token in ``path``; ConfigError naming the file if it is unsafe or unusable.

    ``name`` is the setting as the user should read it (``'admin_token_file'``).
    The file must be a regular file that only its owner may access (``chmod 600``;
    see ``is_private``) and hold one line of printable ASCII without spaces (it
    travels in gRPC metadata).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(f"{name} {path}: cannot read ({exc.strerror or exc})") from None
    try:
        # checked on the open file, so what is checked is what is read
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{name} {path}: not a regular file")
        if not is_private(info):
            raise ConfigError(
                f"{name} {path} is accessible by group or others (mode "
                f"{info.st_mode & 0o777:04o}); a token file must be private to the server's "
                f"user: run chmod 600 {path}"
            )
        raw = os.read(fd, 64 * 1024 + 1)
    finally:
        os.close(fd)
    if len(raw) > 64 * 1024:
        raise ConfigError(f"{name} {path}: larger than 64 KiB; it should hold one token")
    text = raw.decode("ascii", "replace").strip()
    if not text:
        raise ConfigError(
            f"{name} {path} is empty; write a token into it, e.g. "
            f"python -c 'import secrets; print(secrets.token_urlsafe(32))' > {path} "
            f"&& chmod 600 {path}"
        )
    if not all("!" <= ch <= "~" for ch in text):
        raise ConfigError(
            f"{name} {path}: the token must be one line of printable ASCII without spaces "
            f"(it is sent in gRPC metadata)"
        )
    return Token.of(text, path)


def ensure_admin_token(home: Path) -> tuple[Path, bool]:
    """``$OSPREY_HOME/admin.token`` (mode 0600), created with a fresh token if absent.

    Returns the path and whether it was created now. An existing file is left as it
    is (``read_token_file`` checks it when the server starts).
    """
    path = home / ADMIN_TOKEN_FILE_NAME
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path, False
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
    return path, True


def with_demo_admin_token(config: ServerConfig) -> ServerConfig:
    """``osprey demo``: use (creating it if absent) ``$OSPREY_HOME/admin.token``.

    Logs where the token is and how a client sends it; never the token itself.
    A configured ``admin_token_file`` is kept as it is.
    """
    if config.admin_token_file is not None:
        return config
    path, created = ensure_admin_token(config.home)
    log.info(
        "%s admin token %s (mode 0600); control RPCs (load/unload) need it, e.g. with "
        "tritonclient: token = open(%r).read().strip(); "
        "client.load_model(\"fraud\", headers={\"authorization\": \"Bearer \" + token})",
        "generated a new" if created else "using the", path, str(path),
    )
    return dataclasses.replace(config, admin_token_file=path)


def admin_subject_names(config: ServerConfig) -> frozenset[str]:
    """The CNs of ``admin_subjects`` (comma-separated), without blanks."""
    return frozenset(s.strip() for s in config.admin_subjects.split(",") if s.strip())


def _quoted(name: str) -> str:
    return f"'{name}'"


def read_tokens(
    admin_file: Path | None,
    client_file: Path | None,
    key: Callable[[str], str] = _quoted,
) -> tuple[Token | None, Token | None]:
    """The admin and client tokens (None where no file is set); ConfigError if unusable."""
    admin = read_token_file(admin_file, key("admin_token_file")) if admin_file else None
    client = read_token_file(client_file, key("client_token_file")) if client_file else None
    if admin is not None and client is not None and admin.digest == client.digest:
        raise ConfigError(
            f"{key('admin_token_file')} {admin_file} and {key('client_token_file')} "
            f"{client_file} hold the same token; the admin token must differ from the one "
            f"inference clients hold"
        )
    return admin, client


def _check_subjects(config: ServerConfig, key: Callable[[str], str]) -> frozenset[str]:
    subjects = admin_subject_names(config)
    if subjects and config.tls_client_ca is None:
        raise ConfigError(
            f"{key('admin_subjects')} needs mutual TLS: without --tls-client-ca no client "
            f"presents a certificate whose CN could be checked"
        )
    return subjects


def validate_auth_settings(config: ServerConfig, key: Callable[[str], str] = _quoted) -> None:
    """Refuse unusable token files and admin subjects that no client could present."""
    _check_subjects(config, key)
    read_tokens(config.admin_token_file, config.client_token_file, key)


# -- decisions ---------------------------------------------------------------------------


def bearer_tokens(metadata: Iterable[tuple[str, Any]]) -> list[str]:
    """Every ``authorization: Bearer <token>`` value; Unauthenticated if one is malformed."""
    tokens = []
    for name, value in metadata:
        if name != AUTHORIZATION:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the 'authorization' metadata must be 'Bearer <token>'")
        tokens.append(token.strip())
    return tokens


def peer_common_name(auth_context: dict[str, Sequence[bytes]]) -> str | None:
    """The subject CN of the peer's verified client certificate, if it presented one."""
    if list(auth_context.get("transport_security_type", ())) != [b"ssl"]:
        return None
    names = auth_context.get("x509_common_name") or ()
    return names[0].decode("utf-8", "replace") if names else None


class Authorizer:
    """The configured identities, and the decision for one call."""

    def __init__(
        self,
        admin_token: Token | None = None,
        admin_subjects: Iterable[str] = (),
        client_token: Token | None = None,
    ) -> None:
        self.admin_token = admin_token
        self.admin_subjects = frozenset(admin_subjects)
        self.client_token = client_token

    @classmethod
    def from_config(cls, config: ServerConfig) -> Authorizer:
        """Read the token files of ``config`` (ConfigError if one is unusable)."""
        subjects = _check_subjects(config, _quoted)
        admin, client = read_tokens(config.admin_token_file, config.client_token_file)
        _warn_if_short(admin, client)
        return cls(admin, subjects, client)

    def reload(self) -> bool:
        """Re-read the token files (SIGHUP); on failure keep the current tokens and log."""
        admin_file = self.admin_token.path if self.admin_token else None
        client_file = self.client_token.path if self.client_token else None
        if admin_file is None and client_file is None:
            return True
        try:
            admin, client = read_tokens(admin_file, client_file)
        except ConfigError as exc:
            log.error("token reload failed, keeping the previous tokens: %s", exc.message)
            return False
        _warn_if_short(admin, client)
        self.admin_token, self.client_token = admin, client
        log.info("token files re-read")
        return True

    def describe(self) -> str:
        """The configured identities, for the start-up log (never a token)."""
        admins = []
        if self.admin_token is not None:
            admins.append(f"admin token from {self.admin_token.path}")
        if self.admin_subjects:
            admins.append("client certificates CN=" + ",".join(sorted(self.admin_subjects)))
        control = " or ".join(admins) if admins else "disabled (no admin identity configured)"
        inference = (
            f"client token from {self.client_token.path}" if self.client_token else "open"
        )
        return f"control RPCs: {control}; inference: {inference}"

    def guards(self, access: Access) -> bool:
        """Whether calls of this class are checked at all (open ones cost nothing)."""
        if access is Access.CONTROL:
            return True
        return access is Access.INFERENCE and self.client_token is not None

    def authorize(
        self,
        access: Access,
        metadata: Iterable[tuple[str, Any]],
        auth_context: dict[str, Sequence[bytes]],
    ) -> str:
        """The caller's identity for the log, or Unauthenticated / PermissionDenied."""
        if access is Access.CONTROL:
            return self._admin(bearer_tokens(metadata), auth_context)
        if access is Access.INFERENCE and self.client_token is not None:
            tokens = bearer_tokens(metadata)
            if not tokens:
                raise Unauthenticated(
                    "inference needs the client token: send 'authorization: Bearer <token>'"
                )
            if any([self.client_token.matches(t) for t in tokens]):
                return "client token"
            raise PermissionDenied("the client token presented is not valid")
        return "anonymous"

    def _admin(self, tokens: list[str], auth_context: dict[str, Sequence[bytes]]) -> str:
        if self.admin_token is None and not self.admin_subjects:
            raise PermissionDenied(NO_ADMIN_CONFIGURED)
        presented = []
        if self.admin_token is not None and tokens:
            # a list, not a generator: every token is compared, whichever matches
            if any([self.admin_token.matches(t) for t in tokens]):
                return "admin token"
            presented.append("the token presented is not the admin token")
        common_name = peer_common_name(auth_context) if self.admin_subjects else None
        if common_name is not None:
            if common_name in self.admin_subjects:
                return f"cert CN={common_name}"
            presented.append(f"certificate CN={common_name} is not on admin_subjects")
        if presented:
            raise PermissionDenied("control RPCs need an admin identity: " + "; ".join(presented))
        accepted = []
        if self.admin_token is not None:
            accepted.append("'authorization: Bearer <admin token>'")
        if self.admin_subjects:
            accepted.append("a client certificate whose CN is on admin_subjects")
        raise Unauthenticated("control RPCs need an admin identity: " + " or ".join(accepted))


def _warn_if_short(*tokens: Token | None) -> None:
    for token in tokens:
        if token is not None and token.chars < MIN_TOKEN_CHARS:
            log.warning(
                "the token in %s has only %d characters; use a long random one "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
                token.path, token.chars,
            )


# -- interceptor -------------------------------------------------------------------------

Admit = Callable[[Any], Awaitable[None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every guarded RPC with an ``Authorizer`` before its handler runs.

    The peer's certificate is only visible on the servicer context, so guarded
    handlers are wrapped: the wrapper decides, aborts with the status of the
    refusal, or runs the original handler. Open RPCs pass through untouched.
    """

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        CALL_METADATA.set(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        access = access_of(method)
        if handler is None or not self.authorizer.guards(access):
            return handler

        async def admit(context: Any) -> None:
            await self._admit(method, access, context)

        return guarded_handler(handler, admit)

    async def _admit(self, method: str, access: Access, context: Any) -> None:
        try:
            identity = self.authorizer.authorize(
                access, context.invocation_metadata() or (), context.auth_context()
            )
        except (Unauthenticated, PermissionDenied) as exc:
            code, message = status_for(exc)
            # Refused inference is logged at DEBUG: a client without its token would
            # otherwise flood the log at request rate.
            level = logging.WARNING if access is Access.CONTROL else logging.DEBUG
            log.log(level, "%s refused (%s) for peer %s: %s",
                    short_name(method), code.name, context.peer(), message)
            await context.abort(code, message)
            return
        if access is Access.CONTROL:
            log.info("%s called by %s (peer %s)", short_name(method), identity, context.peer())


def guarded_handler(handler: Any, admit: Admit) -> Any:
    """A copy of ``handler`` (a grpc.RpcMethodHandler) that awaits ``admit`` first."""
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _guard_unary(handler.unary_unary, admit), **options
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guard_stream(handler.unary_stream, admit), **options
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _guard_unary(handler.stream_unary, admit), **options
        )
    return grpc.stream_stream_rpc_method_handler(
        _guard_stream(handler.stream_stream, admit), **options
    )


def _guard_unary(behaviour: Callable[..., Awaitable[Any]], admit: Admit) -> Any:
    async def guarded(request: Any, context: Any) -> Any:
        await admit(context)
        return await behaviour(request, context)

    return guarded


def _guard_stream(behaviour: Callable[..., Any], admit: Admit) -> Any:
    """Keep the handler's style: an async generator, or a coroutine that writes."""
    if inspect.isasyncgenfunction(behaviour):

        async def guarded_generator(request: Any, context: Any) -> AsyncIterator[Any]:
            await admit(context)
            async for response in behaviour(request, context):
                yield response

        return guarded_generator
    return _guard_unary(behaviour, admit)
