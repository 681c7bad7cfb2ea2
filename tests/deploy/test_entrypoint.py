"""Dockerfile.gpu's entrypoint and health check, run outside Docker.

There is no Docker engine on the test machines, so each test lays out what the
container would see in a temporary folder (the TLS secret mounted where the image's
``OSPREY_TLS_*`` point, ``$OSPREY_HOME`` with a model repository), takes the
entrypoint's command line and the image's ``OSPREY_*`` environment from the
Dockerfile itself, redirects the container paths into that folder, and runs it: on
0.0.0.0 like the container (clients connect over loopback only). The health check
is the script the image writes (its heredoc), run with the same environment.

Only the ports differ: the container's are fixed (8001/8002, published by the
operator), here the operator's ``-e OSPREY_GRPC_PORT=0`` picks free ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from registry import migrate
from registry.db import Database
from registry.importer import import_repository
from registry.service import Registry
from tests.server.onnx_models import add_sub_graph, write_model
from tests.server.process import READY

from .certs import SERVER_NAME, Pki, make_pki
from .dockerfile import REPO_ROOT, copied_heredoc, load

HEALTHCHECK_PATH = "/usr/local/bin/osprey-healthcheck"
# The documented way to run the image without TLS (see the head of Dockerfile.gpu).
PLAINTEXT = {
    "OSPREY_INSECURE": "1",
    "OSPREY_TLS_CERT": "",
    "OSPREY_TLS_KEY": "",
    "OSPREY_TLS_CLIENT_CA": "",
}


@dataclass(frozen=True)
class Image:
    argv: list[str]  # ENTRYPOINT + CMD
    env: dict[str, str]  # what ENV gives the runtime stage
    workdir: str
    healthcheck: str  # the script's text


@pytest.fixture(scope="module")
def image() -> Image:
    final = load()[-1]
    entry = final.last("ENTRYPOINT")
    cmd = final.last("CMD")
    workdir = final.last("WORKDIR")
    assert entry is not None and entry.exec_form and workdir is not None
    argv = entry.exec_form + ((cmd.exec_form or []) if cmd else [])
    return Image(argv, final.env(), workdir.args, copied_heredoc(final, HEALTHCHECK_PATH))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Container:
    """The container's file system and environment, laid out under a temporary folder."""

    image: Image
    root: Path
    mounts: dict[str, Path]  # container path -> folder here
    healthcheck: Path

    def here(self, container_path: str) -> Path:
        for inside, outside in self.mounts.items():
            if container_path == inside or container_path.startswith(inside + "/"):
                return outside / os.path.relpath(container_path, inside)
        raise AssertionError(f"{container_path} is not under a mounted path {list(self.mounts)}")

    def env(self, overrides: dict[str, str] | None = None) -> dict[str, str]:
        """The host's environment less any OSPREY_*, the image's OSPREY_* redirected."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSPREY_")}
        for key, value in self.image.env.items():
            if key.startswith("OSPREY_"):
                env[key] = str(self.here(value)) if value.startswith("/") else value
            elif key.startswith("PYTHON"):
                env[key] = value
        env.update({"OSPREY_GRPC_PORT": "0", "OSPREY_METRICS_PORT": "0"})
        env.update(overrides or {})
        # the console script's package when the project is not installed (plain checkout)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        return env

    def command(self) -> list[str]:
        argv = list(self.image.argv)
        assert argv[0] == "osprey", argv
        script = Path(sys.executable).parent / "osprey"
        head = [str(script)] if script.exists() else [sys.executable, "-m", "server"]
        return head + argv[1:]

    def run_healthcheck(self, env: dict[str, str], port: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(self.healthcheck)],
            env={**env, "OSPREY_GRPC_PORT": str(port)},
            capture_output=True, text=True, timeout=60,
        )


@pytest.fixture
def container(image: Image, pki: Pki, tmp_path: Path) -> Container:
    home_inside = image.env["OSPREY_HOME"]
    tls_inside = str(Path(image.env["OSPREY_TLS_CERT"]).parent)
    home = tmp_path / "home"
    tls = tmp_path / "secret"
    tls.mkdir()
    # the Kubernetes TLS secret's three keys, where the image expects them
    for source, key in ((pki.server_cert, "OSPREY_TLS_CERT"), (pki.server_key, "OSPREY_TLS_KEY"),
                        (pki.ca, "OSPREY_TLS_CLIENT_CA")):
        target = tls / Path(image.env[key]).name
        shutil.copyfile(source, target)
        target.chmod(0o600 if key == "OSPREY_TLS_KEY" else 0o644)
    write_model(home / "models", "add_sub", add_sub_graph(4), {"max_batch_size": 8})
    # what an operator does first (`osprey db upgrade`, `osprey models import`): the
    # entrypoint serves what the registry in the volume deploys
    db = Database(f"sqlite:///{home / 'osprey.db'}")
    migrate.upgrade(db)
    import_repository(Registry(db, home), home / "models", actor="test", reason="image test")
    db.dispose()
    healthcheck = tmp_path / "osprey-healthcheck"
    healthcheck.write_text(image.healthcheck)
    mounts = {home_inside: home, tls_inside: tls}
    assert image.workdir == home_inside
    return Container(image, tmp_path, mounts, healthcheck)


class Running:
    """The entrypoint as a process; stdout/stderr collected, the ready line parsed."""

    def __init__(self, container: Container, env: dict[str, str]) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            container.command(), env=env, cwd=container.here(container.image.workdir),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.host = ""
        self.port = 0
        self._ready = threading.Event()
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.append(line)
            match = READY.search(line)
            if match:
                self.host, self.port = match.group("host"), int(match.group("grpc"))
                self._ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"the entrypoint did not become ready (exit {self.proc.poll()}):\n"
                    f"{self.output}"
                )

    def wait_exit(self, timeout: float = 90.0) -> int:
        code = self.proc.wait(timeout)
        for pump in self._pumps:  # the last lines, up to end of file
            pump.join(10)
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


Start = Callable[..., Running]


@pytest.fixture
def start(container: Container) -> Iterator[Start]:
    started: list[Running] = []

    def _start(overrides: dict[str, str] | None = None, ready: bool = True) -> Running:
        running = Running(container, container.env(overrides))
        started.append(running)
        if ready:
            running.wait_ready()
        return running

    yield _start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def _client(
    port: int, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpcclient.InferenceServerClient:
    url = f"127.0.0.1:{port}"
    if ca is None:
        return grpcclient.InferenceServerClient(url)
    return grpcclient.InferenceServerClient(
        url, ssl=True, root_certificates=str(ca),
        private_key=str(key) if key else None, certificate_chain=str(cert) if cert else None,
        channel_args=[("grpc.ssl_target_name_override", SERVER_NAME)],
    )


def _infer(client: grpcclient.InferenceServerClient) -> None:
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    b = np.full((1, 4), 0.5, dtype=np.float32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 4], "FP32"),
              grpcclient.InferInput("INPUT1", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("add_sub", inputs, client_timeout=30)
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b)


def _refused(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException):
        client.is_server_live(client_timeout=10)


def test_entrypoint_serves_mutual_tls_by_default(
    container: Container, pki: Pki, start: Start
) -> None:
    server = start()
    assert server.host == "0.0.0.0", server.output
    check = container.run_healthcheck(server.env, server.port)
    assert check.returncode == 0 and check.stdout.strip() == "SERVING", check.stdout + check.stderr

    client = _client(server.port, pki.ca, pki.client_cert, pki.client_key)
    assert client.is_server_ready(client_timeout=10)
    _infer(client)
    _refused(_client(server.port, pki.ca))  # no client certificate
    _refused(_client(server.port, pki.ca, pki.stranger_cert, pki.stranger_key))
    _refused(_client(server.port))  # plaintext
    assert server.stop() == 0, server.output  # `docker stop` sends SIGTERM


def test_entrypoint_serves_tls_without_client_certificates(
    container: Container, pki: Pki, start: Start
) -> None:
    server = start({"OSPREY_TLS_CLIENT_CA": ""})
    check = container.run_healthcheck(server.env, server.port)
    assert check.returncode == 0 and check.stdout.strip() == "SERVING", check.stdout + check.stderr
    _infer(_client(server.port, pki.ca))
    _refused(_client(server.port))
    assert server.stop() == 0, server.output


def test_entrypoint_serves_plaintext_only_when_the_operator_says_so(
    container: Container, start: Start
) -> None:
    server = start(PLAINTEXT)
    assert server.host == "0.0.0.0", server.output
    check = container.run_healthcheck(server.env, server.port)
    assert check.returncode == 0 and check.stdout.strip() == "SERVING", check.stdout + check.stderr
    _infer(_client(server.port))
    assert server.stop() == 0, server.output


def test_entrypoint_refuses_plaintext_on_all_interfaces_without_insecure(
    start: Start,
) -> None:
    server = start({k: v for k, v in PLAINTEXT.items() if k != "OSPREY_INSECURE"}, ready=False)
    code = server.wait_exit()
    assert code != 0, server.output
    assert "--insecure" in server.output and "OSPREY_INSECURE" in server.output, server.output


def test_entrypoint_fails_closed_when_the_secret_is_not_mounted(
    container: Container, start: Start
) -> None:
    secret = container.here(str(Path(container.image.env["OSPREY_TLS_CERT"]).parent))
    for file in secret.iterdir():
        file.unlink()
    # not even OSPREY_INSECURE=1 alone turns the image's TLS settings into plaintext
    server = start({"OSPREY_INSECURE": "1"}, ready=False)
    code = server.wait_exit()
    assert code != 0, server.output
    assert "tls.crt" in server.output or "tls.key" in server.output, server.output
    assert not READY.search(server.output)


def test_health_check_fails_when_nothing_serves(container: Container) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for overrides in ({}, PLAINTEXT):
        env = container.env({**overrides, "OSPREY_HEALTHCHECK_TIMEOUT": "2"})
        check = container.run_healthcheck(env, port)
        assert check.returncode == 1, check.stdout + check.stderr
        assert "unhealthy" in check.stderr
