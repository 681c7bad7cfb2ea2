"""``osprey serve --workers N``: N worker processes on one port, supervised.

The supervisor checks that nobody else serves the gRPC port (grpcio's SO_REUSEPORT
would otherwise let us share it silently), holds it with a bound, non-listening
SO_REUSEPORT socket so no unrelated process can take it, and starts N workers
(``python -m server worker``) that bind it with SO_REUSEPORT, each with its own
batchers and ONNX Runtime sessions. It serves the metrics port itself, summing the
workers' metrics. A worker that dies is restarted (logged and counted in
``osprey_worker_restarts_total``). SIGTERM/SIGINT stop every worker in order (each:
health NOT_SERVING, stop accepting, drain within the grace); SIGHUP is forwarded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .config import ServerConfig
from .errors import AddressInUse, ConfigError
from .metrics_merge import WorkersCollector

log = logging.getLogger("osprey.supervisor")

READY_PREFIX = "osprey ready: "
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STARTUP_TIMEOUT_S = 600.0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def claim_port(host: str, port: int) -> socket.socket:
    """Check nobody serves ``host:port`` and hold it for our workers.

    Returns a bound, non-listening SO_REUSEPORT socket (its port is the chosen one
    when ``port`` is 0). Raises AddressInUse when another process has the port.
    """
    bind_host = "127.0.0.1" if host == "localhost" else host
    probe = socket.socket(_family(bind_host), socket.SOCK_STREAM)
    try:
        probe.bind((bind_host, port))
        port = probe.getsockname()[1]
    except OSError as exc:
        raise AddressInUse(
            f"cannot bind gRPC to {host}:{port}: address in use ({exc.strerror})"
        ) from None
    finally:
        probe.close()
    guard = socket.socket(_family(bind_host), socket.SOCK_STREAM)
    guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        guard.bind((bind_host, port))
    except OSError as exc:
        guard.close()
        raise AddressInUse(f"cannot hold {host}:{port}: {exc.strerror}") from None
    return guard


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    metrics_port: int = 0
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    restarts: int = 0


class Supervisor:
    """Starts, watches and stops the worker processes of one server."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.count = config.workers
        self.workers = [_Worker(i) for i in range(self.count)]
        self.stopping = False
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(WorkersCollector(self._worker_metrics_ports))
        self.restarts = Counter(
            "osprey_worker_restarts", "Worker processes restarted after they died",
            registry=self.registry,
        )
        self.live = Gauge("osprey_workers", "Worker processes running", registry=self.registry)
        self._tasks: set[asyncio.Task[None]] = set()

    def _count_live(self) -> None:
        self.live.set(sum(1 for w in self.workers if w.process and w.process.returncode is None))

    def _worker_metrics_ports(self) -> list[int]:
        return [w.metrics_port for w in self.workers if w.metrics_port and w.ready.is_set()]

    async def run(self) -> int:
        cfg = self.config
        guard = claim_port(cfg.host, cfg.grpc_port)
        port = guard.getsockname()[1]
        metrics_http = None
        run_dir = Path(tempfile.mkdtemp(prefix="osprey-workers-"))  # mode 0700
        try:
            if cfg.metrics:
                try:
                    metrics_http, _ = start_http_server(
                        cfg.metrics_port, addr=cfg.host, registry=self.registry
                    )
                except OSError as exc:
                    raise AddressInUse(
                        f"cannot bind metrics to {cfg.host}:{cfg.metrics_port}: address in "
                        f"use ({exc.strerror})"
                    ) from None
            spec = run_dir / "worker.json"
            worker_config = dataclasses.replace(cfg, grpc_port=port, metrics_port=0)
            spec.write_text(json.dumps(_config_json(worker_config)))
            return await self._supervise(spec, run_dir, port, metrics_http)
        finally:
            guard.close()
            if metrics_http is not None:
                metrics_http.shutdown()
                metrics_http.server_close()
            shutil.rmtree(run_dir, ignore_errors=True)

    async def _supervise(self, spec: Path, run_dir: Path, port: int, metrics_http: Any) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        for worker in self.workers:
            await self._spawn(worker, spec, run_dir)
        try:
            await asyncio.wait_for(
                self._all_ready_or_dead(), STARTUP_TIMEOUT_S
            )
        except TimeoutError:
            log.error("workers did not become ready within %.0fs", STARTUP_TIMEOUT_S)
            await self._stop_all()
            return 1
        if not all(w.ready.is_set() for w in self.workers):
            log.error("a worker failed to start; stopping the others")
            await self._stop_all()
            return 2
        for worker in self.workers:
            self._watch(worker, spec, run_dir)
        metrics_at = (
            f"{self.config.host}:{metrics_http.server_port}" if metrics_http else "off"
        )
        log.info("%d workers serving %s:%d", self.count, self.config.host, port)
        print(f"{READY_PREFIX}grpc={self.config.host}:{port} metrics={metrics_at}", flush=True)
        await stop.wait()
        log.info("shutdown requested: stopping %d workers", self.count)
        return await self._stop_all()

    async def _all_ready_or_dead(self) -> None:
        while True:
            if all(w.ready.is_set() for w in self.workers):
                return
            if any(w.process and w.process.returncode is not None for w in self.workers):
                return
            await asyncio.sleep(0.05)

    async def _spawn(self, worker: _Worker, spec: Path, run_dir: Path) -> None:
        worker.ready.clear()
        worker.metrics_port = 0
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", "worker",
            "--spec", str(spec), "--index", str(worker.index),
            "--count", str(self.count), "--run-dir", str(run_dir),
            stdout=asyncio.subprocess.PIPE,
        )
        self._count_live()
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)
        self._keep(self._read_stdout(worker, worker.process))

    async def _read_stdout(self, worker: _Worker, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(READY_PREFIX):
                metrics = line.rsplit("metrics=", 1)[1]
                worker.metrics_port = 0 if metrics == "off" else int(metrics.rsplit(":", 1)[1])
                worker.ready.set()
            elif line:
                print(f"[worker {worker.index}] {line}", flush=True)

    def _watch(self, worker: _Worker, spec: Path, run_dir: Path) -> None:
        self._keep(self._restart_when_dead(worker, spec, run_dir))

    async def _restart_when_dead(self, worker: _Worker, spec: Path, run_dir: Path) -> None:
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            worker.ready.clear()
            self._count_live()
            if self.stopping:
                return
            delay = RESTART_BACKOFF_S[min(worker.restarts, len(RESTART_BACKOFF_S) - 1)]
            worker.restarts += 1
            self.restarts.inc()
            log.error(
                "worker %d (pid %d) exited with code %s; restarting in %.1fs (restart #%d)",
                worker.index, worker.process.pid, code, delay, worker.restarts,
            )
            await asyncio.sleep(delay)
            if self.stopping:
                return
            await self._spawn(worker, spec, run_dir)

    def _keep(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forward(self, sig: int) -> None:
        for worker in self.workers:
            if worker.process and worker.process.returncode is None:
                worker.process.send_signal(sig)

    async def _stop_all(self) -> int:
        """SIGTERM every worker, wait out the grace, kill what is left; the exit code."""
        self.stopping = True
        self._forward(signal.SIGTERM)
        codes = []
        limit = self.config.grace_seconds + 15.0
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            try:
                codes.append(await asyncio.wait_for(process.wait(), limit))
            except TimeoutError:
                log.error("worker %d did not stop in %.0fs; killing it", worker.index, limit)
                process.kill()
                codes.append(await process.wait())
            limit = 5.0  # the others had the same time to drain
        for task in list(self._tasks):
            task.cancel()
        self.live.set(0)
        failed = [c for c in codes if c != 0]
        if failed:
            log.error("workers exited with codes %s", codes)
        log.info("stopped")
        return 0 if not failed else 1


def _config_json(config: ServerConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def load_worker_config(spec: Path) -> ServerConfig:
    """The ServerConfig the supervisor wrote for its workers."""
    data = json.loads(spec.read_text())
    fields = {f.name: f for f in dataclasses.fields(ServerConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{spec}: unknown setting '{key}'")
        kind = str(fields[key].type)
        values[key] = Path(value) if value is not None and "Path" in kind else value
    return dataclasses.replace(ServerConfig(**values), workers=1)


def worker_main(spec: Path, index: int, count: int, run_dir: Path) -> int:
    """Entry of one worker process (``python -m server worker``)."""
    from .app import OspreyServer, configure_logging
    from .peers import WorkerGroup

    config = load_worker_config(spec)
    configure_logging(config.log_level, prefix=f"worker-{index}[{os.getpid()}] ")
    group = WorkerGroup(index=index, count=count, run_dir=run_dir)
    asyncio.run(OspreyServer(config, group=group).run())
    return 0
