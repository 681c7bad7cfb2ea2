"""Server lifecycle: bind, load and warm models, serve, drain on SIGTERM.

The model source is the SQL registry (``server.registry_source``: the deployed
versions, followed while serving) unless ``--model-repository`` names a Triton-style
folder, which is then served as it is.

Start-up: gRPC binds first (live, not ready), then every model of the source is
loaded and warmed; only then do ServerReady and the health service say SERVING and
the ready line is printed. Shutdown (SIGTERM/SIGINT): health NOT_SERVING → stop
accepting → in-flight calls finish within ``grace_seconds`` → batchers drain →
exit 0.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import traceback
from importlib import metadata
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import start_http_server

from registry import migrate
from registry.audit_chain import load_key
from registry.db import Database, describe
from registry.service import Registry

from .audit_sidecar import ShipperSidecar
from .audit_spool import AuditLog
from .auth import AuthInterceptor, Authorizer
from .config import ServerConfig
from .errors import AddressInUse
from .feedback import FeedbackServicer
from .inference import InferenceCore
from .loaded_models import LoadedModels
from .metrics import ServerMetrics
from .model_source import ModelSource, RepositoryFolder
from .peers import WorkerGroup, worker_socket
from .protocol.inference import grpc_service_pb2 as pb
from .protocol.inference import grpc_service_pb2_grpc as pb_grpc
from .protocol.osprey.v1 import feedback_pb2_grpc as fpb_grpc
from .registry_source import RegistrySource, RegistryWatcher
from .servicer import InferenceServicer
from .shadow import ShadowResult, ShadowRunner
from .tls import ReloadingServerCredentials, is_loopback

log = logging.getLogger("osprey.server")

INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
READY_LINE = "osprey ready: grpc={grpc} metrics={metrics}"
# NOT_SERVING while the registry database cannot be reached (the server still serves
# its last deployment): the "degraded" signal for probes and dashboards.
REGISTRY_HEALTH_SERVICE = "osprey.registry"
# NOT_SERVING while audit records cannot be shipped (they wait in the spool).
AUDIT_HEALTH_SERVICE = "osprey.audit"
# how long threads still running after an orderly stop may hold the process
THREADS_AT_EXIT_SECONDS = 10.0


def open_server_database(config: ServerConfig, upgrade: bool = True) -> Database:
    """The registry/audit database of a server. The embedded default (no database_url)
    is the server's own and is migrated here (``upgrade``; with ``--workers N`` the
    supervisor does it once, before the workers start); an explicit one must be at
    this code's schema already (`osprey db upgrade`)."""
    database = Database(config.database_url, home=config.home)
    if not config.database_url and upgrade:
        migrate.upgrade(database)
    else:
        migrate.check_schema(database)
    return database


def prepare_embedded_database(config: ServerConfig) -> None:
    """Migrate the embedded SQLite database once (the supervisor, before forking)."""
    needed = config.audit != "off" or config.model_repository is None
    if needed and not config.database_url:
        open_server_database(config).dispose()


class _RegistryShadowSink:
    """Shadow answers into the registry's ``shadow_results`` table."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def write(self, results: list[ShadowResult]) -> None:
        self.registry.record_shadow_results([dataclasses.asdict(r) for r in results])


def model_health_name(model: str) -> str:
    """The grpc.health.v1 service name that reports one model's readiness."""
    return f"{INFERENCE_SERVICE}/{model}"


def osprey_version() -> str:
    try:
        return metadata.version("osprey")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class HealthService(health_aio.HealthServicer):
    """``grpc.health.v1`` whose Watch streams suit a graceful shutdown.

    The reference asyncio servicer (grpcio-health-checking, pinned) has two flaws
    that matter here: a Watch stream never ends, so one open watch (gRPC client-side
    health checking keeps one) holds ``server.stop(grace)`` for the whole grace; and
    when one watcher of a service leaves it drops the condition the other watchers
    of that service wait on, so they never hear NOT_SERVING. Here a Watch ends once
    it has sent the shutdown's NOT_SERVING, and a service's condition lives while
    anyone watches it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._watching: collections.Counter[str] = collections.Counter()

    async def Watch(self, request: Any, context: Any) -> None:
        service = request.service
        condition = self._server_watchers[service]
        self._watching[service] += 1
        last = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(
                        service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                    )
                    if status != last:
                        await context.write(health_pb2.HealthCheckResponse(status=status))
                        last = status
                    if self._gracefully_shutting_down:
                        return
                    await condition.wait()
        finally:
            self._watching[service] -= 1
            if self._watching[service] <= 0:
                del self._watching[service]
                self._server_watchers.pop(service, None)

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        # Wake every watcher, also those of services without a status, so all end.
        for condition in list(self._server_watchers.values()):
            async with condition:
                condition.notify_all()


class OspreyServer:
    """One Osprey server process."""

    def __init__(
        self,
        config: ServerConfig,
        source: ModelSource | None = None,
        group: WorkerGroup | None = None,
    ) -> None:
        self.config = config
        self.group = group or WorkerGroup.single()
        self._peer_server: grpc.aio.Server | None = None
        self.metrics = ServerMetrics()
        self.health = HealthService()
        self.watcher: RegistryWatcher | None = None
        self.shadow: ShadowRunner | None = None
        self.audit: AuditLog | None = None
        self.shipper: ShipperSidecar | None = None
        database = None
        if (source is None and config.model_repository is None) or config.audit != "off":
            database = open_server_database(config, upgrade=self.group.count == 1)
        self.database = database
        if source is None and config.model_repository is None:
            assert database is not None
            source = self._registry_source(config, database)
        if config.audit != "off":
            assert database is not None
            self._open_audit(config, database)
        self.source = source or RepositoryFolder(config.models_path)
        self.models = LoadedModels(self.source, self.metrics, self._model_readiness)
        if isinstance(self.source, RegistrySource):
            self.watcher = RegistryWatcher(
                self.source, self.models, config.registry_poll_seconds, self._registry_reachable
            )
            self.shadow = ShadowRunner(_RegistryShadowSink(self.source.registry),
                                       self.metrics.shadow_dropped_inc)
        self.core = InferenceCore(self.models, self.shadow, self.audit)
        self.ready = False
        self.grpc_port = 0
        self.metrics_port = 0
        self._server: grpc.aio.Server | None = None
        self._metrics_http: Any = None
        self._background: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._audit_ok = True
        # Read (and checked) before anything binds: a bad token or certificate stops here.
        self.authorizer = Authorizer.from_config(config)
        self.tls = ReloadingServerCredentials.from_config(config)

    def _open_audit(self, config: ServerConfig, database: Database) -> None:
        key_file = config.audit_key_file or config.home / "audit.key"
        key = load_key(key_file, create=config.audit_key_file is None)
        pii_key_file = config.audit_pii_key_file or config.home / "audit-pii.key"
        pii_key = load_key(pii_key_file, create=config.audit_pii_key_file is None)
        spool = config.audit_spool_dir or config.home / "audit-spool"
        self.audit = AuditLog(spool, key, config.audit, pii_key=pii_key,
                              max_spool_bytes=config.audit_spool_max_bytes,
                              when_full=config.audit_when_full)
        self.shipper = ShipperSidecar(config, self.audit, database, self._audit_reachable)
        audit = self.audit
        self.metrics.audit_spool_bytes.set_function(lambda: audit.spool_bytes)
        self.metrics.audit_records.set_function(lambda: audit.appended)
        self.metrics.audit_groups.set_function(lambda: audit.groups)
        log.info("audit: %s, stream %s, spool %s, key %s", config.audit, audit.stream_id,
                 audit.folder, key_file)

    def _audit_reachable(self, reachable: bool) -> None:
        """From the spool watch: the audit database answers (or not), the spool can be
        written (or not)."""
        if reachable == self._audit_ok:
            return
        self._audit_ok = reachable
        if not reachable:
            failure = self.audit.failure if self.audit is not None else None
            if failure:
                log.error("audit spool cannot be written (%s)", failure)
            else:
                log.warning("audit records are not being shipped: they wait in the spool")
        else:
            log.info("audit records are being shipped")
        status = health_pb2.HealthCheckResponse
        self._set_health(AUDIT_HEALTH_SERVICE,
                         status.SERVING if reachable else status.NOT_SERVING)

    def _set_health(self, service: str, status: int) -> None:
        task = asyncio.get_running_loop().create_task(self.health.set(service, status))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    def _registry_source(config: ServerConfig, database: Database) -> RegistrySource:
        """Serve what the registry deploys."""
        registry = Registry(database, config.home, config.artifact_store)
        log.info("model source: registry %s (artifacts: %s store)",
                 describe(registry.db.url), config.artifact_store)
        return RegistrySource(registry, config.home / "registry-cache",
                              config.rollback_window_seconds)

    def _registry_reachable(self, reachable: bool) -> None:
        self.metrics.registry_unreachable.set(0 if reachable else 1)
        status = health_pb2.HealthCheckResponse
        self._set_health(REGISTRY_HEALTH_SERVICE,
                         status.SERVING if reachable else status.NOT_SERVING)

    def _model_readiness(self, name: str, ready: bool) -> None:
        serving = health_pb2.HealthCheckResponse
        status = serving.SERVING if ready else serving.NOT_SERVING
        task = asyncio.get_running_loop().create_task(
            self.health.set(model_health_name(name), status)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        cfg = self.config
        options = [
            # grpcio turns SO_REUSEPORT on by default, which would let a second server
            # silently share a port that is already served: refuse instead.
            # Worker processes of one `--workers N` server share the port on purpose;
            # the supervisor checked that nobody else serves it.
            ("grpc.so_reuseport", 1 if self.group.count > 1 else 0),
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
        ]
        server = grpc.aio.server(
            options=options, interceptors=[AuthInterceptor(self.authorizer)]
        )
        servicer = InferenceServicer(
            self.core, self.models, osprey_version(), lambda: self.ready, self.group,
            tls=self.tls is not None,
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        if self.database is not None:
            fpb_grpc.add_FeedbackServicer_to_server(FeedbackServicer(self.database), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(INFERENCE_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        if cfg.reflection:
            from grpc_reflection.v1alpha import reflection

            reflection.enable_server_reflection(
                (INFERENCE_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME),
                server,
            )
        address = f"{cfg.host}:{cfg.grpc_port}"
        try:
            if self.tls is not None:
                self.grpc_port = server.add_secure_port(address, self.tls.credentials)
            else:
                self.grpc_port = server.add_insecure_port(address)
        except RuntimeError:
            self.grpc_port = 0
        if not self.grpc_port:
            raise AddressInUse(
                f"cannot bind gRPC to {address}: address in use (another process serves this "
                f"port) or not available on this host"
            )
        if cfg.metrics:
            try:
                self._metrics_http, _ = start_http_server(
                    cfg.metrics_port,
                    # a worker's metrics are for its supervisor only
                    addr="127.0.0.1" if self.group.count > 1 else cfg.host,
                    registry=self.metrics.registry,
                )
            except OSError as exc:
                raise AddressInUse(
                    f"cannot bind metrics to {cfg.host}:{cfg.metrics_port}: address in use "
                    f"({exc.strerror})"
                ) from None
            self.metrics_port = self._metrics_http.server_port
        await server.start()
        if self.group.count > 1:
            await self._start_peer_server(options)
        self._server = server
        log.info(
            "gRPC listening on %s:%d (not ready until models are warm)", cfg.host, self.grpc_port
        )
        self._log_security()
        self._loop = asyncio.get_running_loop()
        if self.audit is not None and self.shipper is not None:
            self.audit.start()
            self.shipper.start()  # ships leftovers of earlier processes too
            await self.health.set(AUDIT_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        if self.watcher is not None:
            await self.watcher.start()
            self._registry_reachable(True)
        else:
            for name in self.source.model_names():
                await self.models.load(name)
        self.ready = True
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(INFERENCE_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        metrics_at = f"{cfg.host}:{self.metrics_port}" if cfg.metrics else "off"
        log.info("ready: %d model version(s) serving", len(self.models.served()))
        print(
            READY_LINE.format(grpc=f"{cfg.host}:{self.grpc_port}", metrics=metrics_at),
            flush=True,
        )

    async def _start_peer_server(self, options: list[tuple[str, Any]]) -> None:
        """Serve this worker's own answers to its peers on a Unix socket (no fan-out)."""
        assert self.group.run_dir is not None
        path = worker_socket(self.group.run_dir, self.group.index)
        path.unlink(missing_ok=True)
        server = grpc.aio.server(options=[o for o in options if o[0] != "grpc.so_reuseport"])
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(
                self.core, self.models, osprey_version(), lambda: self.ready, self.group,
                fan_out=False, tls=False,
            ),
            server,
        )
        if not server.add_insecure_port(f"unix:{path}"):
            raise AddressInUse(f"cannot serve peers on {path}")
        await server.start()
        self._peer_server = server

    async def stop(self) -> None:
        """Graceful shutdown in the order of DESIGN.md."""
        self.ready = False
        await self.health.enter_graceful_shutdown()  # every service NOT_SERVING
        if self._server is not None:
            log.info("draining: up to %.1fs for in-flight calls", self.config.grace_seconds)
            await self._server.stop(self.config.grace_seconds)
        if self._peer_server is not None:
            await self._peer_server.stop(self.config.grace_seconds)
        await self.group.close()
        if self.watcher is not None:
            await self.watcher.stop()
        if self.shadow is not None:
            await self.shadow.close()
        await self.models.close()
        if self.audit is not None and self.shipper is not None:
            # every answered request's record: written, sealed, shipped if the database is up
            await asyncio.to_thread(self.audit.stop)
            await self.shipper.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        log.info("stopped")

    def _log_security(self) -> None:
        if self.tls is not None:
            log.info("transport: %s", self.tls.describe())
        elif is_loopback(self.config.host):
            log.info("transport: plaintext on loopback")
        else:
            log.warning(
                "transport: PLAINTEXT on %s (--insecure): anyone on the network can read and "
                "forge calls; use --tls-cert/--tls-key", self.config.host,
            )
        log.info("%s", self.authorizer.describe())

    def reload_credentials(self) -> None:
        """SIGHUP: re-read certificate and token files; what fails to load is kept as it was."""
        log.info("SIGHUP: reloading certificates and tokens")
        if self.tls is not None:
            self.tls.reload()
        self.authorizer.reload()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then stop gracefully; SIGHUP reloads credentials."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_credentials)
        try:
            await self.start()
            await stopping.wait()
            log.info("shutdown requested")
        finally:
            await self.stop()
            exit_if_threads_hang(THREADS_AT_EXIT_SECONDS)


def exit_if_threads_hang(seconds: float) -> None:
    """After an orderly stop, leave at most ``seconds`` for the threads still running.

    A thread blocked in a call that never returns (a database that stopped answering
    in the middle of a query) would otherwise hold the process for ever: the event
    loop's executor and the interpreter both join their threads at exit. Everything
    that matters is done by now (calls drained, audit records sealed), so the process
    logs where each such thread is and exits."""

    def watchdog() -> None:
        time.sleep(seconds)
        me = threading.get_ident()
        frames = sys._current_frames()
        stuck = [t for t in threading.enumerate()
                 if t.ident not in (me, threading.main_thread().ident) and not t.daemon]
        if not stuck:
            return  # the main thread is only finishing up
        log.error("stopped, but %d thread(s) did not finish in %gs; exiting without them",
                  len(stuck), seconds)
        for t in stuck:
            frame = frames.get(t.ident or -1)
            where = "".join(traceback.format_stack(frame)[-4:]) if frame else "?\n"
            log.error("thread %s is still in:\n%s", t.name, where.rstrip())
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(0)

    threading.Thread(target=watchdog, name="osprey-exit-watchdog", daemon=True).start()


def configure_logging(level: str, prefix: str = "") -> None:
    """Log to stderr; worker processes prefix their lines with who they are."""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
    )


def serve(config: ServerConfig, source: ModelSource | None = None) -> int:
    """Run a server until it is told to stop; returns the process exit code."""
    configure_logging(config.log_level)
    asyncio.run(OspreyServer(config, source).run())
    return 0
