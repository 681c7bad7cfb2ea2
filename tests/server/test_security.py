"""Security by default, against the real server: TLS, mutual TLS, admin and client tokens.

The tests build their own PKI (``certs.py``): a CA with a server certificate (SANs
127.0.0.1 and localhost) and two client certificates (the admin CN and another),
a second CA whose server certificate replaces the first on SIGHUP, and an unknown
CA whose client certificate claims the admin CN.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .certs import CertificateAuthority
from .clientutil import expect_error, make_inputs, status_of
from .onnx_models import add_sub_graph, write_model
from .process import REPO_ROOT, ServerProcess

ADMIN_CN = "osprey-admin"
OTHER_CN = "someone-else"


@dataclass(frozen=True)
class Pki:
    """Paths of every PEM file the tests use, and two token files."""

    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    other_cert: Path
    other_key: Path
    rogue_cert: Path  # CN=osprey-admin, signed by a CA the server does not know
    rogue_key: Path
    ca2: Path
    server2_cert: Path
    server2_key: Path
    client_token: str
    client_token_file: Path


def _secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca2, rogue = (CertificateAuthority(n) for n in ("Osprey Test CA", "Next CA", "Rogue CA"))
    server_cert, server_key = ca.issue("osprey-server", server=True).write(folder, "server")
    admin_cert, admin_key = ca.issue(ADMIN_CN, server=False).write(folder, "admin")
    other_cert, other_key = ca.issue(OTHER_CN, server=False).write(folder, "other")
    rogue_cert, rogue_key = rogue.issue(ADMIN_CN, server=False).write(folder, "rogue")
    server2_cert, server2_key = ca2.issue("osprey-server", server=True).write(folder, "server2")
    client_token = "client-" + os.urandom(16).hex()
    return Pki(
        folder, ca.write(folder, "ca"), server_cert, server_key, admin_cert, admin_key,
        other_cert, other_key, rogue_cert, rogue_key, ca2.write(folder, "ca2"),
        server2_cert, server2_key, client_token,
        _secret_file(folder / "client.token", client_token),
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("security_repo")
    write_model(repo, "toggle", add_sub_graph(16), {"max_batch_size": 8})
    return repo


@pytest.fixture(scope="module")
def tls_server(
    pki: Pki, repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """TLS without client certificates; an admin token (ServerProcess's)."""
    proc = ServerProcess(
        repo, tmp_path_factory.mktemp("tls_home"),
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--log-level", "DEBUG",
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def mtls_server(
    pki: Pki, repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Mutual TLS, admin by CN or token, and a client token for inference."""
    proc = ServerProcess(
        repo, tmp_path_factory.mktemp("mtls_home"),
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca),
        "--admin-subjects", f"ops-oncall, {ADMIN_CN}",
        "--client-token-file", str(pki.client_token_file),
        "--log-level", "DEBUG",
    )
    yield proc
    proc.stop()


def tls_client(
    proc: ServerProcess, root: Path, cert: Path | None = None, key: Path | None = None
) -> grpcclient.InferenceServerClient:
    """A client on a channel of its own (so a new TLS handshake)."""
    return grpcclient.InferenceServerClient(
        proc.url, ssl=True, root_certificates=str(root),
        private_key=None if key is None else str(key),
        certificate_chain=None if cert is None else str(cert),
        channel_args=[("grpc.use_local_subchannel_pool", 1)],
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def add_sub_arrays() -> dict[str, np.ndarray]:
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    return {"INPUT0": a, "INPUT1": np.ones((1, 16), dtype=np.float32)}


def infer(client: grpcclient.InferenceServerClient, **kwargs: Any) -> np.ndarray:
    arrays = add_sub_arrays()
    out = client.infer("toggle", make_inputs(arrays), **kwargs).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, arrays["INPUT0"] + arrays["INPUT1"])
    return out


def refused(call: Callable[[], Any], status: str, *fragments: str) -> None:
    exc = expect_error(call)
    assert status_of(exc) == status, exc
    for fragment in fragments:
        assert fragment in exc.message(), (fragment, exc.message())


def cannot_connect(client: grpcclient.InferenceServerClient) -> None:
    """The TLS handshake fails, so no RPC gets through."""
    with pytest.raises(InferenceServerException) as err:
        client.is_server_live(client_timeout=10)
    assert status_of(err.value) in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), err.value
    client.close()


def unload_and_load_back(
    client: grpcclient.InferenceServerClient, headers: dict[str, str] | None = None
) -> None:
    client.unload_model("toggle", headers=headers)
    assert client.is_model_ready("toggle") is False
    client.load_model("toggle", headers=headers)
    assert client.is_model_ready("toggle") is True


def wait_for_log(proc: ServerProcess, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.stderr:
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{proc.stderr}"
        assert proc.proc.poll() is None, f"server exited:\n{proc.stderr}"
        time.sleep(0.05)


# -- TLS --------------------------------------------------------------------------------


def test_tls_works_with_tritonclient(tls_server: ServerProcess, pki: Pki) -> None:
    client = tls_client(tls_server, pki.ca)
    assert client.is_server_ready() is True
    infer(client)
    client.close()
    assert f"TLS, certificate {pki.server_cert}" in tls_server.stderr


def test_tls_server_refuses_plaintext_and_untrusting_clients(
    tls_server: ServerProcess, pki: Pki
) -> None:
    cannot_connect(grpcclient.InferenceServerClient(tls_server.url))
    cannot_connect(tls_client(tls_server, pki.ca2))  # does not trust the server's CA


def test_control_rpc_needs_the_admin_token(tls_server: ServerProcess, pki: Pki) -> None:
    client = tls_client(tls_server, pki.ca)
    refused(lambda: client.unload_model("toggle"), "UNAUTHENTICATED", "admin", "Bearer")
    refused(
        lambda: client.unload_model("toggle", headers=bearer("not-the-token")),
        "PERMISSION_DENIED",
        "not the admin token",
    )
    refused(
        lambda: client.load_model("toggle", headers={"authorization": "Basic b3NwcmV5"}),
        "UNAUTHENTICATED",
        "Bearer <token>",
    )
    assert client.is_model_ready("toggle") is True  # nothing happened
    unload_and_load_back(client, tls_server.admin_headers)
    client.close()


def test_open_rpcs_need_no_credentials(tls_server: ServerProcess, pki: Pki) -> None:
    client = tls_client(tls_server, pki.ca)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("toggle")
    assert client.get_server_metadata().name == "osprey"
    assert client.get_model_metadata("toggle").name == "toggle"
    assert client.get_model_config("toggle").config.name == "toggle"
    assert client.get_inference_statistics("toggle").model_stats
    assert client.get_model_repository_index().models
    infer(client)  # no client token configured: inference is open
    client.close()


# -- mutual TLS --------------------------------------------------------------------------


def test_mtls_rejects_clients_without_a_trusted_certificate(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    cannot_connect(tls_client(mtls_server, pki.ca))  # no certificate
    cannot_connect(tls_client(mtls_server, pki.ca, pki.rogue_cert, pki.rogue_key))
    assert "mutual TLS (client certificates required)" in mtls_server.stderr


def test_admin_by_certificate_subject(mtls_server: ServerProcess, pki: Pki) -> None:
    admin = tls_client(mtls_server, pki.ca, pki.admin_cert, pki.admin_key)
    unload_and_load_back(admin)  # no token: the certificate is the identity
    admin.close()
    assert f"called by cert CN={ADMIN_CN}" in mtls_server.stderr


def test_non_admin_subject_is_denied(mtls_server: ServerProcess, pki: Pki) -> None:
    other = tls_client(mtls_server, pki.ca, pki.other_cert, pki.other_key)
    refused(
        lambda: other.unload_model("toggle"),
        "PERMISSION_DENIED",
        f"CN={OTHER_CN} is not on admin_subjects",
    )
    refused(
        lambda: other.unload_model("toggle", headers=bearer(pki.client_token)),
        "PERMISSION_DENIED",
    )
    assert other.is_model_ready("toggle") is True
    unload_and_load_back(other, mtls_server.admin_headers)  # the admin token also works
    other.close()


def test_client_token_guards_inference(mtls_server: ServerProcess, pki: Pki) -> None:
    client = tls_client(mtls_server, pki.ca, pki.other_cert, pki.other_key)
    refused(lambda: infer(client), "UNAUTHENTICATED", "client token")
    refused(lambda: infer(client, headers=bearer("guess")), "PERMISSION_DENIED")
    # the admin token is for control RPCs only
    refused(lambda: infer(client, headers=mtls_server.admin_headers), "PERMISSION_DENIED")
    infer(client, headers=bearer(pki.client_token))
    # everything else stays open
    assert client.is_server_ready() and client.is_model_ready("toggle")
    assert client.get_inference_statistics("toggle").model_stats
    client.close()


def _collect(answers: queue.Queue[tuple[Any, Any]], result: Any, error: Any) -> None:
    answers.put((result, error))


def test_client_token_guards_streaming_inference(mtls_server: ServerProcess, pki: Pki) -> None:
    for headers, expected in ((None, "UNAUTHENTICATED"), (bearer(pki.client_token), None)):
        client = tls_client(mtls_server, pki.ca, pki.other_cert, pki.other_key)
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(functools.partial(_collect, answers), headers=headers)
        # The refusal can close the stream before the request is queued; tritonclient
        # then raises here and reports the status through the callback.
        with contextlib.suppress(InferenceServerException):
            client.async_stream_infer("toggle", make_inputs(add_sub_arrays()))
        result, error = answers.get(timeout=30)
        client.stop_stream()
        client.close()
        if expected is None:
            assert error is None and result.as_numpy("OUTPUT0") is not None
        else:
            assert error is not None, "the stream was not refused"
            assert expected in f"{error.status()} {error}", error


# -- binding and no admin ----------------------------------------------------------------


@pytest.fixture(scope="module")
def open_server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Plaintext on every interface by explicit --insecure, and no admin identity."""
    proc = ServerProcess(
        repo, tmp_path_factory.mktemp("open_home"), "--host", "0.0.0.0", "--insecure",
        admin_token=False,
    )
    yield proc
    proc.stop()


def test_insecure_allows_plaintext_on_all_interfaces(open_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(open_server.url)
    assert client.is_server_ready() is True
    infer(client)
    client.close()
    assert "PLAINTEXT on 0.0.0.0 (--insecure)" in open_server.stderr


def test_control_rpcs_refused_without_an_admin_identity(open_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(open_server.url)
    for headers in (None, bearer("anything")):
        refused(
            lambda h=headers: client.unload_model("toggle", headers=h),
            "PERMISSION_DENIED",
            "no admin identity configured",
            "--admin-token-file",
            "--admin-subjects",
        )
    assert client.is_model_ready("toggle") is True
    client.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_non_loopback_plaintext_refused_at_start(
    repo: Path, tmp_path: Path, host: str
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--home", str(tmp_path),
         "--model-repository", str(repo), "--host", host, "--grpc-port", "0",
         "--metrics-port", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 2, run
    assert "--tls-cert" in run.stderr and "--insecure" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert "osprey ready" not in run.stdout


def test_bad_token_file_refused_at_start(repo: Path, tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("a-perfectly-fine-token-but-world-readable\n")
    token.chmod(0o644)
    run = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--home", str(tmp_path),
         "--model-repository", str(repo), "--grpc-port", "0", "--metrics-port", "0",
         "--admin-token-file", str(token)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 2, run
    assert f"chmod 600 {token}" in run.stderr
    assert "a-perfectly-fine-token" not in run.stderr + run.stdout


# -- SIGHUP ------------------------------------------------------------------------------


def test_sighup_reloads_certificates_and_tokens(pki: Pki, repo: Path, tmp_path: Path) -> None:
    live_cert, live_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    live_cert.write_bytes(pki.server_cert.read_bytes())
    _secret_file(live_key, pki.server_key.read_text().strip())
    proc = ServerProcess(
        repo, tmp_path / "home", "--tls-cert", str(live_cert), "--tls-key", str(live_key)
    )
    try:
        old_admin = proc.admin_headers
        assert tls_client(proc, pki.ca).is_server_ready() is True

        # rotate to a certificate from another CA (written as a secret mount would be)
        for src, dst in ((pki.server2_cert, live_cert), (pki.server2_key, live_key)):
            staged = dst.with_suffix(".new")
            staged.write_bytes(src.read_bytes())
            staged.chmod(0o600)
            os.replace(staged, dst)
        new_token = "rotated-" + os.urandom(16).hex()
        _secret_file(tmp_path / "home" / "test-admin.token", new_token)
        proc.proc.send_signal(signal.SIGHUP)
        wait_for_log(proc, "TLS certificates reloaded")
        wait_for_log(proc, "token files re-read")
        cannot_connect(tls_client(proc, pki.ca))
        client = tls_client(proc, pki.ca2)
        assert client.is_server_ready() is True
        refused(lambda: client.unload_model("toggle", headers=old_admin), "PERMISSION_DENIED")
        unload_and_load_back(client, bearer(new_token))
        client.close()

        # a reload with broken files keeps what serves now
        live_cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        (tmp_path / "home" / "test-admin.token").chmod(0o644)
        proc.proc.send_signal(signal.SIGHUP)
        wait_for_log(proc, "TLS reload failed, keeping the previous certificates")
        wait_for_log(proc, "token reload failed, keeping the previous tokens")
        client = tls_client(proc, pki.ca2)
        assert client.is_server_ready() is True
        unload_and_load_back(client, bearer(new_token))
        client.close()
        cannot_connect(tls_client(proc, pki.ca))
        assert proc.proc.poll() is None
        logs = "".join(proc.stdout_lines) + proc.stderr
        for secret in (proc.admin_token, new_token):
            assert secret is not None and secret not in logs
    finally:
        proc.stop()


# -- logs --------------------------------------------------------------------------------


def test_tokens_never_appear_in_logs(
    tls_server: ServerProcess, mtls_server: ServerProcess, pki: Pki
) -> None:
    # a round of right and wrong tokens, so that each path has logged something
    wrong = "wrong-" + os.urandom(8).hex()
    for proc, root in ((tls_server, pki.ca), (mtls_server, None)):
        admin = (
            tls_client(proc, root) if root else
            tls_client(proc, pki.ca, pki.other_cert, pki.other_key)
        )
        unload_and_load_back(admin, proc.admin_headers)
        admin.close()
    client = tls_client(mtls_server, pki.ca, pki.other_cert, pki.other_key)
    infer(client, headers=bearer(pki.client_token))
    refused(lambda: infer(client, headers=bearer(wrong)), "PERMISSION_DENIED")
    refused(lambda: client.unload_model("toggle", headers=bearer(wrong)), "PERMISSION_DENIED")
    client.close()
    for proc in (tls_server, mtls_server):
        logs = "".join(proc.stdout_lines) + proc.stderr
        assert proc.admin_token is not None
        for secret in (proc.admin_token, pki.client_token, wrong):
            assert secret not in logs
        assert "called by admin token" in logs  # the caller is named, its token never
        assert "refused (PERMISSION_DENIED)" in logs
