"""``server.auth`` in process: method classes, token handling, decisions, the interceptor."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2

from server import auth
from server.auth import Access, Authorizer, Token, access_of
from server.config import ServerConfig, load_config
from server.errors import ConfigError, PermissionDenied, Unauthenticated

SERVICE = "/inference.GRPCInferenceService/"
ADMIN = "admin-" + "a" * 30
CLIENT = "client-" + "c" * 30


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# -- classification ----------------------------------------------------------------------


def test_every_inference_rpc_is_classified() -> None:
    """Against the wire definition (tritonclient's): the names are real, the split exact."""
    methods = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    classes = {m.name: access_of(SERVICE + m.name) for m in methods}
    assert {n for n, a in classes.items() if a is Access.CONTROL} == {
        "RepositoryModelLoad", "RepositoryModelUnload",
    }
    assert {n for n, a in classes.items() if a is Access.INFERENCE} == {
        "ModelInfer", "ModelStreamInfer",
    }
    for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                 "ModelConfig", "ModelStatistics", "RepositoryIndex"):
        assert classes[name] is Access.OPEN
    assert access_of("/grpc.health.v1.Health/Check") is Access.OPEN
    assert access_of("/grpc.health.v1.Health/Watch") is Access.OPEN


def test_control_methods_can_be_extended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "CONTROL_METHODS", set(auth.CONTROL_METHODS))
    assert access_of("/osprey.v1.Admin/Deploy") is Access.OPEN
    auth.register_control_methods("/osprey.v1.Admin/", "/osprey.v1.Feedback/Purge")
    assert access_of("/osprey.v1.Admin/Deploy") is Access.CONTROL
    assert access_of("/osprey.v1.Admin/Rollback") is Access.CONTROL
    assert access_of("/osprey.v1.Feedback/Purge") is Access.CONTROL
    assert access_of("/osprey.v1.Feedback/Submit") is Access.OPEN
    for bad in ("Deploy", "osprey.v1.Admin/Deploy", "/a/b/c"):
        with pytest.raises(ValueError, match="full gRPC method name"):
            auth.register_control_methods(bad)


# -- tokens ------------------------------------------------------------------------------


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    token = Token.of(ADMIN, Path("admin.token"))
    assert token.matches(ADMIN) is True
    assert token.matches(ADMIN[:-1]) is False
    assert token.matches("") is False
    assert len(calls) == 3
    # digests of equal length are compared, so a token's length does not leak either
    assert all(len(a) == len(b) == 32 for a, b in calls)
    assert ADMIN not in repr(token)


def test_read_token_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path / "t", f"  {ADMIN}\n")
    token = auth.read_token_file(path, "'admin_token_file'")
    assert token.matches(ADMIN) and token.path == path


@pytest.mark.parametrize(
    ("text", "mode", "fragments"),
    [
        (ADMIN, 0o644, ["accessible by group or others", "0644", "chmod 600"]),
        (ADMIN, 0o660, ["chmod 600"]),
        (ADMIN, 0o604, ["chmod 600"]),
        (ADMIN, 0o602, ["chmod 600"]),
        ("", 0o600, ["is empty", "token_urlsafe"]),
        ("\n  \n", 0o600, ["is empty"]),
        ("two words", 0o600, ["printable ASCII without spaces"]),
        ("line\nline", 0o600, ["printable ASCII without spaces"]),
    ],
)
def test_unusable_token_files_are_refused(
    tmp_path: Path, text: str, mode: int, fragments: list[str]
) -> None:
    path = secret_file(tmp_path / "admin.token", text, mode)
    with pytest.raises(ConfigError) as err:
        auth.read_token_file(path, "'admin_token_file'")
    message = err.value.message
    assert str(path) in message and "admin_token_file" in message
    for fragment in fragments:
        assert fragment in message, message
    if text.strip():
        assert text not in message


def test_group_readable_only_when_root_owns_it(tmp_path: Path) -> None:
    """PostgreSQL's rule: root may share a secret with a group (Kubernetes' fsGroup)."""
    path = secret_file(tmp_path / "admin.token", ADMIN, 0o640)
    if path.stat().st_uid == 0:
        assert auth.read_token_file(path, "'admin_token_file'").matches(ADMIN)
    else:
        with pytest.raises(ConfigError, match="chmod 600"):
            auth.read_token_file(path, "'admin_token_file'")

    def stat_of(uid: int, mode: int) -> os.stat_result:
        return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))

    assert auth.is_private(stat_of(1000, 0o600)) and auth.is_private(stat_of(1000, 0o400))
    assert not auth.is_private(stat_of(1000, 0o640))
    assert auth.is_private(stat_of(0, 0o640)) and auth.is_private(stat_of(0, 0o440))
    for mode in (0o660, 0o650, 0o644, 0o604, 0o601):
        assert not auth.is_private(stat_of(0, mode)), oct(mode)


def test_missing_or_unreadable_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        auth.read_token_file(tmp_path / "absent", "'admin_token_file'")
    with pytest.raises(ConfigError, match=r"not a regular file|cannot read"):
        auth.read_token_file(tmp_path, "'admin_token_file'")


def test_config_checks_token_files_and_names_the_origin(tmp_path: Path) -> None:
    loose = secret_file(tmp_path / "loose.token", ADMIN, 0o644)
    with pytest.raises(ConfigError) as err:
        load_config(env={"OSPREY_HOME": str(tmp_path), "OSPREY_ADMIN_TOKEN_FILE": str(loose)})
    assert "environment OSPREY_ADMIN_TOKEN_FILE" in err.value.message
    assert f"chmod 600 {loose}" in err.value.message

    admin = secret_file(tmp_path / "admin.token", ADMIN)
    same = secret_file(tmp_path / "client.token", ADMIN)
    with pytest.raises(ConfigError, match="same token"):
        load_config(
            cli={"admin_token_file": str(admin), "client_token_file": str(same)},
            env={"OSPREY_HOME": str(tmp_path)},
        )
    client = secret_file(tmp_path / "client.token", CLIENT)
    config = load_config(
        cli={"admin_token_file": str(admin), "client_token_file": str(client)},
        env={"OSPREY_HOME": str(tmp_path)},
    )
    assert config.admin_token_file == admin and config.client_token_file == client


def test_admin_subjects_need_mutual_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(cli={"admin_subjects": "ops"}, env={"OSPREY_HOME": str(tmp_path)})
    assert "admin_subjects" in err.value.message and "--tls-client-ca" in err.value.message


def test_ensure_admin_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path, created = auth.ensure_admin_token(home)
    assert created and path == home / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 40
    auth.read_token_file(path, "'admin_token_file'")  # passes its own checks
    assert auth.ensure_admin_token(home) == (path, False)
    assert path.read_text().strip() == token  # never overwritten


def test_demo_admin_token_is_logged_by_path_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="osprey.server")
    config = auth.with_demo_admin_token(ServerConfig(home=tmp_path))
    path = tmp_path / "admin.token"
    assert config.admin_token_file == path
    token = path.read_text().strip()
    assert str(path) in caplog.text and "load_model" in caplog.text
    assert "authorization" in caplog.text and token not in caplog.text
    mine = secret_file(tmp_path / "mine.token", ADMIN)
    kept = ServerConfig(home=tmp_path, admin_token_file=mine)
    assert auth.with_demo_admin_token(kept) is kept


# -- decisions ---------------------------------------------------------------------------


def bearer(token: str) -> list[tuple[str, str]]:
    return [("user-agent", "test"), ("authorization", f"Bearer {token}")]


def cert(cn: str) -> dict[str, list[bytes]]:
    return {"transport_security_type": [b"ssl"], "x509_common_name": [cn.encode()]}


def authorizer(admin: bool = True, subjects: tuple[str, ...] = (), client: bool = False) -> Any:
    return Authorizer(
        Token.of(ADMIN, Path("admin.token")) if admin else None,
        subjects,
        Token.of(CLIENT, Path("client.token")) if client else None,
    )


def test_control_decisions() -> None:
    a = authorizer(subjects=("ops",))
    assert a.authorize(Access.CONTROL, bearer(ADMIN), {}) == "admin token"
    assert a.authorize(Access.CONTROL, [("authorization", f"bearer  {ADMIN} ")], {}) == (
        "admin token"
    )
    assert a.authorize(Access.CONTROL, [], cert("ops")) == "cert CN=ops"
    # either credential is enough
    assert a.authorize(Access.CONTROL, bearer("wrong"), cert("ops")) == "cert CN=ops"
    assert a.authorize(Access.CONTROL, bearer(ADMIN), cert("dev")) == "admin token"
    with pytest.raises(Unauthenticated, match="Bearer <admin token>"):
        a.authorize(Access.CONTROL, [("user-agent", "x")], {})
    with pytest.raises(Unauthenticated, match="'Bearer <token>'"):
        a.authorize(Access.CONTROL, [("authorization", f"Basic {ADMIN}")], {})
    with pytest.raises(Unauthenticated):
        a.authorize(Access.CONTROL, [("authorization", "Bearer ")], {})
    with pytest.raises(PermissionDenied, match="not the admin token"):
        a.authorize(Access.CONTROL, bearer("wrong"), {})
    with pytest.raises(PermissionDenied, match="CN=dev is not on admin_subjects"):
        a.authorize(Access.CONTROL, [], cert("dev"))
    # a certificate only counts after TLS verified it
    with pytest.raises(Unauthenticated):
        a.authorize(Access.CONTROL, [], {"x509_common_name": [b"ops"]})


def test_control_refused_when_no_admin_is_configured() -> None:
    a = authorizer(admin=False)
    for metadata, context in (([], {}), (bearer(ADMIN), cert("ops"))):
        with pytest.raises(PermissionDenied) as err:
            a.authorize(Access.CONTROL, metadata, context)
        assert "--admin-token-file" in err.value.message
        assert "--admin-subjects" in err.value.message
    assert a.guards(Access.CONTROL) is True


def test_inference_decisions() -> None:
    open_ = authorizer()
    assert open_.guards(Access.INFERENCE) is False and open_.guards(Access.OPEN) is False
    guarded = authorizer(client=True)
    assert guarded.guards(Access.INFERENCE) is True
    assert guarded.authorize(Access.INFERENCE, bearer(CLIENT), {}) == "client token"
    with pytest.raises(Unauthenticated, match="client token"):
        guarded.authorize(Access.INFERENCE, [], cert("ops"))
    with pytest.raises(PermissionDenied):
        guarded.authorize(Access.INFERENCE, bearer("wrong"), {})
    with pytest.raises(PermissionDenied):  # tokens do not stand in for each other
        guarded.authorize(Access.INFERENCE, bearer(ADMIN), {})
    with pytest.raises(PermissionDenied):
        guarded.authorize(Access.CONTROL, bearer(CLIENT), {})
    assert guarded.authorize(Access.OPEN, [], {}) == "anonymous"


def test_describe_never_shows_a_token() -> None:
    text = authorizer(subjects=("ops", "sre"), client=True).describe()
    assert "admin.token" in text and "CN=ops,sre" in text and "client.token" in text
    assert ADMIN not in text and CLIENT not in text
    assert "disabled" in authorizer(admin=False).describe()


def test_reload_keeps_tokens_when_the_file_breaks(tmp_path: Path) -> None:
    path = secret_file(tmp_path / "admin.token", ADMIN)
    a = Authorizer.from_config(ServerConfig(home=tmp_path, admin_token_file=path))
    secret_file(path, "rotated-" + "r" * 30)
    assert a.reload() is True
    assert a.authorize(Access.CONTROL, bearer("rotated-" + "r" * 30), {}) == "admin token"
    path.write_text("")
    assert a.reload() is False
    assert a.authorize(Access.CONTROL, bearer("rotated-" + "r" * 30), {}) == "admin token"


# -- the interceptor on a real grpc.aio server -------------------------------------------


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _echo_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def _write_stream(requests: AsyncIterator[bytes], context: Any) -> None:
    async for request in requests:
        await context.write(request)


async def test_interceptor_guards_each_handler_kind() -> None:
    server = grpc.aio.server(interceptors=[auth.AuthInterceptor(authorizer(client=True))])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "RepositoryModelLoad": grpc.unary_unary_rpc_method_handler(_echo),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(_echo_stream),
            "ModelInfer": grpc.unary_unary_rpc_method_handler(_echo),
            "ServerLive": grpc.unary_unary_rpc_method_handler(_echo),
        },
    ), grpc.method_handlers_generic_handler(
        "osprey.v1.Admin", {"Tail": grpc.stream_stream_rpc_method_handler(_write_stream)},
    )])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    # A blocking client in a thread: grpc.aio's own client reports a stream the server
    # ended early while requests were still being sent as INTERNAL, not its status.
    def call(method: str, token: str | None, stream: bool = False) -> grpc.StatusCode:
        metadata = bearer(token) if token else None
        try:
            if stream:
                replies = channel.stream_stream(method)(iter([b"a", b"b"]), metadata=metadata)
                assert list(replies) == [b"a", b"b"]
            else:
                assert channel.unary_unary(method)(b"x", metadata=metadata) == b"x"
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    async def code(method: str, token: str | None, stream: bool = False) -> grpc.StatusCode:
        return await asyncio.to_thread(call, method, token, stream)

    try:
        s = grpc.StatusCode
        load = SERVICE + "RepositoryModelLoad"
        assert await code(load, None) == s.UNAUTHENTICATED
        assert await code(load, "wrong") == s.PERMISSION_DENIED
        assert await code(load, ADMIN) == s.OK
        assert await code(SERVICE + "ModelInfer", None) == s.UNAUTHENTICATED
        assert await code(SERVICE + "ModelInfer", CLIENT) == s.OK
        stream = SERVICE + "ModelStreamInfer"
        assert await code(stream, None, stream=True) == s.UNAUTHENTICATED
        assert await code(stream, ADMIN, stream=True) == s.PERMISSION_DENIED
        assert await code(stream, CLIENT, stream=True) == s.OK
        assert await code(SERVICE + "ServerLive", None) == s.OK
        assert await code(SERVICE + "NoSuchMethod", None) == s.UNIMPLEMENTED
        # a service registered as control later, with a handler that writes
        auth.register_control_methods("/osprey.v1.Admin/")
        try:
            assert await code("/osprey.v1.Admin/Tail", None, stream=True) == s.UNAUTHENTICATED
            assert await code("/osprey.v1.Admin/Tail", ADMIN, stream=True) == s.OK
        finally:
            auth.CONTROL_METHODS.discard("/osprey.v1.Admin/")
    finally:
        channel.close()
        await server.stop(None)
