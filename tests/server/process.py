"""Run the real ``osprey serve`` in a subprocess on ephemeral ports."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"osprey ready: grpc=(?P<host>[^:\s]+):(?P<grpc>\d+) metrics=(?P<metrics>\S+)")


class ServerProcess:
    """A running ``python -m server serve``; stdout/stderr are collected.

    Unless ``admin_token=False`` or ``args`` name their own ``--admin-token-file``,
    the server gets an admin token (a mode-0600 file in ``home``) so tests can call
    control RPCs with ``headers=proc.admin_headers``.
    """

    def __init__(
        self,
        repo: Path | None,
        home: Path,
        *args: str,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        timeout: float = 90.0,
        admin_token: bool = True,
    ) -> None:
        self.admin_token: str | None = None
        if admin_token and "--admin-token-file" not in args:
            self.admin_token = secrets.token_urlsafe(32)
            home.mkdir(parents=True, exist_ok=True)
            token_file = home / "test-admin.token"
            token_file.write_text(self.admin_token + "\n")
            token_file.chmod(0o600)
            args = (*args, "--admin-token-file", str(token_file))
        source = ["--model-repository", str(repo)] if repo is not None else []  # None: registry
        cmd = [
            sys.executable, "-m", "server", "serve",
            "--home", str(home),
            *source,
            "--grpc-port", "0",
            "--metrics-port", "0",
            *args,
        ]
        # faulthandler: a server that will not stop is sent SIGABRT and prints where
        # every thread is (see ``stop``)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1",
                    **(env or {})}
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._ready = threading.Event()
        self.grpc_port = 0
        self.metrics_port = 0
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        if wait_ready:
            self.wait_ready(timeout)

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line)
            m = READY.search(line)
            if m:
                self.grpc_port = int(m.group("grpc"))
                metrics = m.group("metrics")
                self.metrics_port = 0 if metrics == "off" else int(metrics.rsplit(":", 1)[1])
                self._ready.set()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"server did not become ready (exit {self.proc.poll()}):\n{self.stderr}"
                )

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """gRPC metadata that makes a call an admin's (tritonclient ``headers=``)."""
        assert self.admin_token is not None, "this server was started without an admin token"
        return {"authorization": f"Bearer {self.admin_token}"}

    @property
    def admin_metadata(self) -> tuple[tuple[str, str], ...]:
        """The same as ``metadata=`` for a plain gRPC stub."""
        return tuple(self.admin_headers.items())

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit code. A server still running after
        ``timeout`` is sent SIGABRT, and the error carries the stack of each of its
        threads (faulthandler) and the end of its log."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            time.sleep(0.2)  # the stderr pump's last lines
            tail = "".join(self.stderr_lines[-200:])
            raise AssertionError(
                f"the server did not exit {timeout:.0f}s after signal {sig}; its log:\n{tail}"
            ) from None

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)
