"""The SRE command line of the registry: ``osprey db|models|deploy|rollout``.

Every command talks to the registry database directly (``--database-url`` or the
``database_url`` config key / ``OSPREY_DATABASE_URL``; default the SQLite file in
``$OSPREY_HOME``), prints a readable table or, with ``--json``, one JSON document,
and exits 0 on success, 2 with ``osprey: error: …`` on stderr otherwise. Every
write needs ``--reason`` and records the actor (``--actor``, ``$OSPREY_ACTOR``, or
``user@host``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from server.config import ServerConfig, load_config
from server.errors import InvalidInput

from . import migrate
from .db import Database, describe
from .records import DeploymentRecord, EventRecord, ModelStatus, RolloutRecord, VersionRecord
from .service import NewVersion, Registry, default_actor

STRATEGIES = {"blue-green": "blue_green", "canary": "canary", "shadow": "shadow"}


# -- plumbing -----------------------------------------------------------------------------


def add_common_flags(parser: argparse.ArgumentParser, write: bool) -> None:
    add = parser.add_argument
    add("--database-url", help="registry database (default: sqlite:///$OSPREY_HOME/osprey.db)")
    add("--home", help="Osprey's data folder (default ~/.osprey)")
    add("--config", type=Path, help="TOML config file (default: $OSPREY_HOME/osprey.toml)")
    add("--json", action="store_true", help="print one JSON document instead of a table")
    if write:
        add("--reason", required=True, help="why (recorded with the change)")
        add("--actor", help="who (default: $OSPREY_ACTOR, else user@host)")


def config_of(args: argparse.Namespace) -> ServerConfig:
    cli = {k: getattr(args, k, None) for k in ("home", "database_url", "audit_key_file")}
    return load_config(cli=cli, config_file=args.config)


def open_database(config: ServerConfig) -> Database:
    return Database(config.database_url, home=config.home)


def open_registry(config: ServerConfig, check: bool = True) -> Registry:
    """The registry of ``config``; SchemaOutOfDate unless it is migrated (``check``)."""
    db = open_database(config)
    if check:
        migrate.check_schema(db)
    return Registry(db, config.home, config.artifact_store)


def _registry(args: argparse.Namespace) -> Registry:
    return open_registry(config_of(args))


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or default_actor()


def emit(args: argparse.Namespace, document: Any, text: str) -> int:
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=False, default=str))
    else:
        print(text)
    return 0


def format_time(value: dt.datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces."""
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _deployment_line(d: DeploymentRecord) -> str:
    if d.candidate_version is None:
        candidate = "no candidate"
    else:
        mode = d.mode.replace("_", "-") if d.mode else ""
        candidate = f"candidate v{d.candidate_version} ({mode}, weight {d.candidate_weight} %)"
    stable = f"v{d.stable_version}" if d.stable_version is not None else "none"
    previous = f", previous v{d.previous_version}" if d.previous_version is not None else ""
    return f"stable {stable}, {candidate}{previous}; revision {d.revision}"


def _version_rows(versions: list[VersionRecord], d: DeploymentRecord | None) -> list[list[Any]]:
    rows = []
    for v in versions:
        role = ""
        if d is not None:
            if v.version == d.stable_version:
                role = "stable"
            elif v.version == d.candidate_version:
                role = f"candidate ({d.mode.replace('_', '-') if d.mode else ''})"
            elif v.version == d.previous_version:
                role = "previous"
        rows.append([v.version, v.status, role, v.sha256[:12], v.size_bytes,
                     "spec" if v.has_feature_spec else "plain", format_time(v.created_at),
                     v.created_by])
    return rows


VERSION_HEADERS = ["version", "status", "role", "sha256", "bytes", "inputs", "created", "by"]


def _events_table(events: list[EventRecord]) -> str:
    rows = [[e.id, format_time(e.at), e.actor, e.kind, e.version, _change(e), e.reason]
            for e in events]
    return table(["id", "at (UTC)", "actor", "event", "version", "change", "reason"], rows)


def _change(e: EventRecord) -> str:
    before, after = e.before or {}, e.after or {}
    keys = ("stable_version", "candidate_version", "candidate_weight", "mode")
    moved = [f"{k.split('_')[0]} {before.get(k)}->{after.get(k)}" for k in keys
             if k in after and before.get(k) != after.get(k)]
    return ", ".join(moved)


# -- db -------------------------------------------------------------------------------------


def _db_migrate(action: str) -> Callable[[argparse.Namespace], int]:
    """``db upgrade`` / ``db downgrade``: move the schema to ``args.revision``."""

    def run(args: argparse.Namespace) -> int:
        db = open_database(config_of(args))
        before = migrate.current(db)
        getattr(migrate, action)(db, args.revision)
        after = migrate.current(db)
        return emit(args, {"database": describe(db.url), "from": before, "to": after},
                     f"{describe(db.url)}: schema {before or 'empty'} -> {after or 'empty'}")

    return run


def _db_current(args: argparse.Namespace) -> int:
    db = open_database(config_of(args))
    at, head = migrate.current(db), migrate.head()
    state = "up to date" if at == head else f"needs `{migrate.UPGRADE_COMMAND}`"
    return emit(args, {"database": describe(db.url), "current": at, "head": head},
                 f"{describe(db.url)}: schema {at or 'empty'} (this Osprey: {head}; {state})")


# -- models -------------------------------------------------------------------------------


def _read_text(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise InvalidInput(f"{what} {path}: {exc.strerror}") from None


def _read_json(path: Path | None, what: str) -> Any:
    text = _read_text(path, what)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} {path} is not valid JSON: {exc}") from None


def _tags(values: list[str]) -> dict[str, str]:
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--tag takes KEY=VALUE, got {item!r}")
        tags[key] = value
    return tags


def _window(value: str | None) -> tuple[dt.datetime, dt.datetime] | None:
    if value is None:
        return None
    start, sep, end = value.partition("/")
    try:
        window = (dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    except ValueError:
        window = None
    if not sep or window is None:
        raise InvalidInput(f"--data-window takes START/END in ISO 8601, got {value!r}")
    return tuple(t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in window)  # type: ignore[return-value]


def _models_register(args: argparse.Namespace) -> int:
    registry = _registry(args)
    decision = None
    if args.decision_output or args.decision_threshold is not None:
        decision = {k: v for k, v in (("output", args.decision_output),
                                      ("threshold", args.decision_threshold)) if v is not None}
    new = NewVersion(
        feature_spec=_read_text(args.feature_spec, "--feature-spec"),
        reference_profile=_read_text(args.reference_profile, "--reference-profile"),
        score_output=args.score_output,
        decision=decision,
        metrics=_read_json(args.metrics, "--metrics") or {},
        parent_version=args.parent_version,
        data_window=_window(args.data_window),
        training_job=args.training_job,
        code_version=args.code_version,
        tags=_tags(args.tag),
    )
    record = registry.register(
        args.model, args.onnx, actor=_actor(args), reason=args.reason,
        settings=_read_json(args.settings, "--settings"), description=args.description or "",
        new=new,
    )
    return emit(args, record.to_json(),
                 f"registered {record.model} version {record.version} "
                 f"(sha256 {record.sha256[:12]}, {record.size_bytes} bytes, "
                 f"{'feature spec' if record.has_feature_spec else 'plain ONNX'})")


def _models_list(args: argparse.Namespace) -> int:
    rows = _registry(args).models()
    document = [{"model": m.to_json(), "deployment": d.to_json(), "versions": n}
                for m, d, n in rows]
    text = table(
        ["model", "versions", "stable", "candidate", "mode", "weight", "revision", "updated"],
        [[m.name, n, d.stable_version, d.candidate_version,
          d.mode.replace("_", "-") if d.mode else None, d.candidate_weight, d.revision,
          format_time(d.updated_at)] for m, d, n in rows],
    ) if rows else "no models registered"
    return emit(args, document, text)


def _models_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    status = registry.status(args.model)
    events = registry.history(args.model, limit=args.events)
    document = {**status.to_json(), "events": [e.to_json() for e in events]}
    text = "\n".join([
        f"model {status.model.name}: {_deployment_line(status.deployment)}",
        f"settings: {json.dumps(status.model.settings)}" if status.model.settings else
        "settings: defaults",
        "",
        table(VERSION_HEADERS, _version_rows(status.versions, status.deployment)),
        *([f"\nversion {v.version} is {v.status}: {v.status_reason}"
           for v in status.versions if v.status != "ready"]),
        "",
        f"last {len(events)} events:",
        _events_table(events),
    ])
    return emit(args, document, text)


def _models_import(args: argparse.Namespace) -> int:
    from .importer import import_repository

    registry = _registry(args)
    imported = import_repository(registry, args.repository, actor=_actor(args),
                                 reason=args.reason, set_stable=not args.no_stable)
    rows = [[i.model, i.source_version, i.version, "yes" if i.stable else ""] for i in imported]
    return emit(args, [i.__dict__ for i in imported],
                 table(["model", "folder version", "registered as", "stable"], rows)
                 if rows else f"no model versions found in {args.repository}")


# -- deploy / rollout -------------------------------------------------------------------


def _status_text(status: ModelStatus) -> str:
    lines = [f"model {status.model.name}: {_deployment_line(status.deployment)}"]
    r = status.rollout
    if r is not None:
        lines.append(_rollout_line(r))
    if status.replicas:
        name = status.model.name
        lines += ["", table(
            ["replica", "host", "pid", "state", "heartbeat", "revision", "loaded", "ready",
             "failed"],
            [[x.id, x.host, x.pid, x.state, format_time(x.last_heartbeat),
              x.holds[name].get("revision"),
              ",".join(map(str, x.holds[name].get("loaded", []))),
              ",".join(map(str, x.holds[name].get("ready", []))),
              ",".join(x.holds[name].get("failed", {})) or None]
             for x in status.replicas],
        )]
        for x in status.replicas:
            for version, why in x.holds[name].get("failed", {}).items():
                lines.append(f"{x.id}: version {version} not loaded: {why}")
    else:
        lines.append("no live replica serves this model")
    return "\n".join(lines)


def _rollout_line(r: RolloutRecord) -> str:
    steps = f", steps {r.steps} at step {r.current_step + 1}" if r.steps else ""
    end = f", finished {format_time(r.finished_at)}" if r.finished_at else ""
    return (f"rollout #{r.id} ({r.state}): {r.strategy.replace('_', '-')} of v"
            f"{r.candidate_version} from v{r.baseline_version}, weight {r.weight} %{steps}; "
            f"started {format_time(r.started_at)} by {r.started_by}{end}: {r.reason}")


def _deploy_set_stable(args: argparse.Namespace) -> int:
    d = _registry(args).set_stable(
        args.model, args.version, actor=_actor(args), reason=args.reason,
        allow_signature_change=args.allow_signature_change,
        expected_revision=args.expect_revision,
    )
    return emit(args, d.to_json(), f"model {d.model}: {_deployment_line(d)}")


def _steps(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise InvalidInput(f"--steps takes comma-separated weights, got {value!r}") from None


def _rollout_start(args: argparse.Namespace) -> int:
    registry = _registry(args)
    r = registry.start_rollout(
        args.model, args.version, STRATEGIES[args.strategy], actor=_actor(args),
        reason=args.reason, weight=args.weight, steps=_steps(args.steps),
        allow_signature_change=args.allow_signature_change,
        expected_revision=args.expect_revision,
    )
    return emit(args, r.to_json(), _rollout_line(r))


def _rollout_step(args: argparse.Namespace) -> int:
    r = _registry(args).step_rollout(
        args.model, actor=_actor(args), reason=args.reason, weight=args.weight,
        expected_revision=args.expect_revision,
    )
    return emit(args, r.to_json(), _rollout_line(r))


def _rollout_write(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        registry = _registry(args)
        kwargs: dict[str, Any] = {"actor": _actor(args), "reason": args.reason,
                                  "expected_revision": args.expect_revision}
        if action == "promote":
            kwargs["force"] = args.force
        d = getattr(registry, action)(args.model, **kwargs)
        return emit(args, d.to_json(), f"model {d.model}: {_deployment_line(d)}")
    return run


def _rollout_status(args: argparse.Namespace) -> int:
    status = _registry(args).status(args.model)
    return emit(args, {"deployment": status.deployment.to_json(),
                        "rollout": status.rollout.to_json() if status.rollout else None,
                        "replicas": [r.to_json() for r in status.replicas]},
                 _status_text(status))


def _rollout_history(args: argparse.Namespace) -> int:
    events = _registry(args).history(args.model, limit=args.limit)
    return emit(args, [e.to_json() for e in events],
                 _events_table(events) if events else "no events")


# -- the parsers ------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """Add ``db``, ``models``, ``deploy`` and ``rollout`` to the ``osprey`` parser."""
    db = sub.add_parser("db", help="the registry database schema").add_subparsers(
        dest="db_command", required=True)
    p = db.add_parser("upgrade", help="migrate the registry database to this Osprey's schema")
    add_common_flags(p, write=False)
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(run=_db_migrate("upgrade"))
    p = db.add_parser("downgrade", help="migrate the registry database back (data loss!)")
    add_common_flags(p, write=False)
    p.add_argument("revision", help="target revision ('base' = empty)")
    p.set_defaults(run=_db_migrate("downgrade"))
    p = db.add_parser("current", help="the schema revision of the database and of this code")
    add_common_flags(p, write=False)
    p.set_defaults(run=_db_current)

    models = sub.add_parser("models", help="registered models and versions").add_subparsers(
        dest="models_command", required=True)
    p = models.add_parser("register", help="validate an ONNX file and register it as a version")
    add_common_flags(p, write=True)
    p.add_argument("model")
    p.add_argument("onnx", type=Path)
    p.add_argument("--settings", type=Path,
                   help="the model's serving settings (a config.json), replacing the stored ones")
    p.add_argument("--description")
    p.add_argument("--feature-spec", type=Path, help="feature_spec.json (with the profile)")
    p.add_argument("--reference-profile", type=Path, help="reference_profile.json")
    p.add_argument("--score-output", help="the output holding the score")
    p.add_argument("--decision-output", help="the output holding the decision")
    p.add_argument("--decision-threshold", type=float, help="decision = score >= threshold")
    p.add_argument("--metrics", type=Path, help="JSON file of evaluation metrics")
    p.add_argument("--parent-version", type=int)
    p.add_argument("--data-window", help="training data window START/END (ISO 8601)")
    p.add_argument("--training-job")
    p.add_argument("--code-version")
    p.add_argument("--tag", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.set_defaults(run=_models_register)
    p = models.add_parser("list", help="every model with its deployment")
    add_common_flags(p, write=False)
    p.set_defaults(run=_models_list)
    p = models.add_parser("show", help="a model's versions, deployment and recent events")
    add_common_flags(p, write=False)
    p.add_argument("model")
    p.add_argument("--events", type=int, default=10, help="how many events (default 10)")
    p.set_defaults(run=_models_show)
    p = models.add_parser("import", help="register every version of a model-repository folder")
    add_common_flags(p, write=True)
    p.add_argument("repository", type=Path)
    p.add_argument("--no-stable", action="store_true",
                   help="do not make the policy's latest version stable for new models")
    p.set_defaults(run=_models_import)

    deploy = sub.add_parser("deploy", help="what serves").add_subparsers(
        dest="deploy_command", required=True)
    p = deploy.add_parser("set-stable", help="serve VERSION to all traffic")
    add_common_flags(p, write=True)
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.add_argument("--allow-signature-change", action="store_true")
    p.add_argument("--expect-revision", type=int, help="fail unless the deployment is at it")
    p.set_defaults(run=_deploy_set_stable)

    rollout = sub.add_parser("rollout", help="blue-green, canary and shadow rollouts")
    rs = rollout.add_subparsers(dest="rollout_command", required=True)
    p = rs.add_parser("start", help="start rolling VERSION out")
    add_common_flags(p, write=True)
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.add_argument("--strategy", choices=sorted(STRATEGIES), required=True)
    p.add_argument("--weight", type=int, help="canary: first weight; shadow: share mirrored")
    p.add_argument("--steps", help="canary weights, e.g. 10,25,50 (the default)")
    p.add_argument("--allow-signature-change", action="store_true")
    p.add_argument("--expect-revision", type=int)
    p.set_defaults(run=_rollout_start)
    p = rs.add_parser("step", help="canary: the next step, or --weight")
    add_common_flags(p, write=True)
    p.add_argument("model")
    p.add_argument("--weight", type=int)
    p.add_argument("--expect-revision", type=int)
    p.set_defaults(run=_rollout_step)
    for action, text in (("promote", "make the candidate stable"),
                         ("abort", "stop the rollout; all traffic to the stable version"),
                         ("rollback", "make the previous stable version stable again")):
        p = rs.add_parser(action, help=text)
        add_common_flags(p, write=True)
        p.add_argument("model")
        p.add_argument("--expect-revision", type=int)
        if action == "promote":
            p.add_argument("--force", action="store_true",
                           help="even if some live replica does not hold the candidate ready")
        p.set_defaults(run=_rollout_write(action))
    p = rs.add_parser("status", help="deployment, rollout and replicas of a model")
    add_common_flags(p, write=False)
    p.add_argument("model")
    p.set_defaults(run=_rollout_status)
    p = rs.add_parser("history", help="every change of a model, oldest first")
    add_common_flags(p, write=False)
    p.add_argument("model")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(run=_rollout_history)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - via `osprey`
    from server.cli import main as osprey_main

    return osprey_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
