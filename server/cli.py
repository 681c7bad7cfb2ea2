"""The ``osprey`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .auth import with_demo_admin_token
from .config import ServerConfig, load_config
from .errors import OspreyError

log = logging.getLogger("osprey")


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", type=Path, help="TOML config file (default: $OSPREY_HOME/osprey.toml)")
    add("--home", help="data folder for models and local state (default ~/.osprey)")
    add("--model-repository",
        help="serve this Triton-style model repository folder as it is, instead of what "
             "the registry deploys")
    add("--host", help="address to bind (default 127.0.0.1)")
    add("--grpc-port", help="gRPC port (default 8001; 0 picks a free one)")
    add("--metrics-port", help="Prometheus port (default 8002; 0 picks a free one)")
    add("--no-metrics", dest="metrics", action="store_const", const=False,
        help="do not serve /metrics")
    add("--grace-seconds", help="time in-flight calls get to finish on SIGTERM (default 30)")
    add("--reflection", action="store_const", const=True, help="enable gRPC reflection")
    add("--workers", help="worker processes sharing the gRPC port (default 1)")
    add("--max-message-bytes", help="largest gRPC message accepted or sent")
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    add("--tls-cert", help="PEM certificate chain: serve gRPC over TLS (with --tls-key)")
    add("--tls-key", help="PEM private key of --tls-cert")
    add("--tls-client-ca",
        help="PEM CA bundle: require client certificates signed by it (mutual TLS)")
    add("--insecure", action="store_const", const=True,
        help="allow plaintext gRPC on a non-loopback --host")
    add("--admin-token-file",
        help="file (mode 0600) holding the bearer token that control RPCs require")
    add("--admin-subjects",
        help="comma-separated client-certificate CNs allowed to call control RPCs (mutual TLS)")
    add("--client-token-file",
        help="file (mode 0600) holding a bearer token that inference RPCs then require")
    add("--database-url",
        help="registry database served from (default sqlite:///$OSPREY_HOME/osprey.db); "
             "ignored with --model-repository")
    add("--artifact-store", help="where registered artifacts live: local (default) or sql")
    add("--registry-poll-seconds", help="how often deployments are re-read (default 2)")
    add("--rollback-window-seconds",
        help="how long a replaced stable version stays loaded for rollbacks (default 600)")
    add("--audit", help="audit log durability: strict (default: an answer waits for its "
                        "record's fsync), relaxed, or off")
    add("--audit-key-file",
        help="HMAC key of the audit chain, kept outside the database (default "
             "$OSPREY_HOME/audit.key, created)")
    add("--audit-pii-key-file",
        help="key of the hashes that stand for personal-data columns in the audit log "
             "(default $OSPREY_HOME/audit-pii.key, created)")
    add("--audit-spool-dir", help="local spool of audit records (default $OSPREY_HOME/audit-spool)")
    add("--audit-spool-max-bytes", help="spool bound while the database is away (default 1 GiB)")
    add("--audit-shipper", help="sidecar (default: a shipper process beside each server "
        "process) or external (`osprey audit ship --follow` runs elsewhere)")
    add("--audit-when-full", help="refuse (default: UNAVAILABLE) or relax, when the spool is full")


def _config(args: argparse.Namespace) -> ServerConfig:
    keys = set(ServerConfig.__dataclass_fields__)
    cli: dict[str, Any] = {k: v for k, v in vars(args).items() if k in keys}
    return load_config(cli=cli, config_file=args.config)


def _serve(args: argparse.Namespace) -> int:
    from .app import serve

    config = _config(args)
    if config.workers > 1:
        return _supervise(config)
    return serve(config)


def _supervise(config: ServerConfig) -> int:
    import asyncio

    from .app import configure_logging, prepare_embedded_database
    from .supervisor import Supervisor

    configure_logging(config.log_level, prefix="supervisor ")
    prepare_embedded_database(config)  # once, not by N workers at the same moment
    return asyncio.run(Supervisor(config).run())


def _worker(args: argparse.Namespace) -> int:
    from .supervisor import worker_main

    return worker_main(args.spec, args.index, args.count, args.run_dir)


def _demo(args: argparse.Namespace) -> int:
    from trainer.datasets import DatasetNotInstalled
    from trainer.fraud_demo import ensure_demo_model

    from .app import configure_logging, serve

    config = _config(args)
    configure_logging(config.log_level)
    config.home.mkdir(parents=True, exist_ok=True)
    try:
        version_dir = ensure_demo_model(config.home, repo=config.models_path)
    except DatasetNotInstalled as exc:
        print(f"osprey: error: {exc}", file=sys.stderr)
        return 2
    evaluation = json.loads((version_dir / "evaluation.json").read_text())
    log.info(
        "demo model %s: AUPRC %.3f on the held-out last 12 hours; serving it as 'fraud' "
        "(inputs: the raw columns V1..V28, Amount as FP32 [N, 1]; outputs 'fraud_score', "
        "'fraud_decision')",
        version_dir,
        evaluation["auprc"],
    )
    if config.model_repository is None:
        _register_demo(config)
    config = with_demo_admin_token(config)
    if config.workers > 1:
        return _supervise(config)
    return serve(config)


def _register_demo(config: ServerConfig) -> None:
    """Put the demo model in the registry (the embedded SQLite one by default) and make
    it stable there, once; the server then serves it from the registry."""
    from registry import migrate
    from registry.cli import open_database
    from registry.db import describe
    from registry.importer import import_repository
    from registry.service import Registry

    db = open_database(config)
    migrate.upgrade(db)
    registry = Registry(db, config.home, config.artifact_store)
    imported = import_repository(registry, config.models_path, actor="osprey demo",
                                 reason="osprey demo: the fraud model trained on the ULB data")
    for item in imported:
        log.info(
            "registry %s: %s folder version %d is version %d%s%s", describe(db.url), item.model,
            item.source_version, item.version, " (new)" if item.new else "",
            ", stable" if item.stable else "",
        )
    db.dispose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osprey",
        description="Osprey: KServe v2 / Triton-compatible inference for ONNX models",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the models of a model repository over gRPC")
    _add_server_flags(serve)
    serve.set_defaults(run=_serve)
    demo = sub.add_parser(
        "demo",
        help="train the fraud model on the ULB credit-card data (once) and serve it",
    )
    _add_server_flags(demo)
    demo.set_defaults(run=_demo)
    # One process of `serve --workers N`, started by the supervisor (not for humans).
    worker = sub.add_parser("worker")
    worker.add_argument("--spec", type=Path, required=True)
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--count", type=int, required=True)
    worker.add_argument("--run-dir", type=Path, required=True)
    worker.set_defaults(run=_worker)
    from registry import audit_cli, cli

    cli.add_commands(sub)
    audit_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except OspreyError as exc:
        print(f"osprey: error: {exc.message}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
