"""The real ``osprey serve`` as a subprocess on ephemeral ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .machine import process_cpu_seconds

READY = re.compile(r"osprey ready: grpc=(?P<host>[^:\s]+):(?P<port>\d+) metrics=\S+")
REPO_ROOT = Path(__file__).resolve().parents[1]


def is_audit_sidecar(command: str) -> bool:
    """Whether a command line is an Osprey server's audit shipper side-car (``osprey
    audit ship --follow``, a child of the server: not part of its serving CPU)."""
    return " audit ship " in f" {command} "


class ServerFailed(RuntimeError):
    """The server did not start, or died; the message carries its stderr."""


class BenchServer:
    """``python -m server serve`` with stdout/stderr in files under ``workdir``."""

    def __init__(
        self,
        model_repository: Path,
        workdir: Path,
        prefix: list[str],
        log_level: str,
        extra_args: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        """``command``: another server to run instead of ``osprey serve`` (the floor of
        ``bench.floor``), which must print the same ready line."""
        self.workdir = workdir
        self.stdout_path = workdir / "server.stdout"
        self.stderr_path = workdir / "server.stderr"
        self.command = [*prefix, *command] if command is not None else [
            *prefix,
            sys.executable, "-m", "server", "serve",
            "--home", str(workdir / "home"),
            "--model-repository", str(model_repository),
            "--grpc-port", "0",
            "--metrics-port", "0",
            "--log-level", log_level,
            *extra_args,
        ]
        self.url = ""
        self.exit_code: int | None = None
        self._stdout = self.stdout_path.open("w")
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=self._stdout,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 120.0) -> str:
        """Block until the ready line; returns the gRPC address."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = READY.search(self.stdout_path.read_text())
            if match:
                self.url = f"{match.group('host')}:{match.group('port')}"
                return self.url
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"server exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.stderr_tail()}"
                )
            time.sleep(0.05)
        raise ServerFailed(f"server not ready after {timeout:.0f}s:\n{self.stderr_tail()}")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (NaN once it is gone)."""
        try:
            return process_cpu_seconds(self.proc.pid)
        except (OSError, ValueError, IndexError):
            return float("nan")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 60) -> str:
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful drain) and wait; kills after ``timeout``. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_code = self.proc.wait()
        self._stdout.close()
        self._stderr.close()
        return self.exit_code

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.exit_code is None:
            self.stop()
