"""Racing writers, in separate processes, on both databases: no duplicate version
numbers, no lost update; the loser of a race gets a clear error."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from registry.db import Database
from registry.errors import DeploymentConflict, NoRolloutInProgress, RolloutInProgress
from registry.service import Registry

from .conftest import Models

WHO = {"actor": "sre@ops", "reason": "race"}


def _in_process(task: tuple[str, str, str, Any]) -> tuple[str, Any]:
    """Run one registry call in a fresh process; (outcome, value or error class)."""
    url, home, action, arg = task
    db = Database(url)
    registry = Registry(db, Path(home))
    try:
        if action == "register":
            return "ok", registry.register("fraud", Path(arg), **WHO).version
        if action == "start":
            return "ok", registry.start_rollout("fraud", arg, "canary", **WHO).id
        return "ok", getattr(registry, action)("fraud", **WHO).revision
    except (DeploymentConflict, NoRolloutInProgress, RolloutInProgress) as exc:
        return "refused", f"{type(exc).__name__}: {exc}"
    finally:
        db.dispose()


def _race(tasks: list[tuple[str, str, str, Any]]) -> list[tuple[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(tasks)) as pool:
        return pool.map(_in_process, tasks)


def test_parallel_registrations_get_distinct_versions(
    database_url: str, home: Path, models: Models, registry: Registry
) -> None:
    paths = [models.offset(float(k)) for k in range(8)]
    outcomes = _race([(database_url, str(home), "register", str(p)) for p in paths])
    assert all(o == "ok" for o, _ in outcomes), outcomes
    assert sorted(v for _, v in outcomes) == list(range(1, 9))
    assert [v.version for v in registry.versions("fraud")] == list(range(1, 9))
    kinds = [e.kind for e in registry.history("fraud")]
    assert kinds.count("model_created") == 1 and kinds.count("version_registered") == 8


@pytest.mark.parametrize("actions", [("promote", "abort"), ("promote", "promote"),
                                     ("abort", "abort")])
def test_racing_promote_and_abort_one_wins(
    database_url: str, home: Path, models: Models, registry: Registry,
    actions: tuple[str, str],
) -> None:
    for k in (1.0, 2.0):
        registry.register("fraud", models.offset(k), **WHO)
    registry.set_stable("fraud", 1, **WHO)
    registry.start_rollout("fraud", 2, "canary", **WHO)
    revision = registry.deployment("fraud").revision
    outcomes = _race([(database_url, str(home), a, None) for a in actions])
    winners = [i for i, (o, _) in enumerate(outcomes) if o == "ok"]
    assert len(winners) == 1, outcomes
    loser = outcomes[1 - winners[0]]
    assert loser[0] == "refused" and ("changed while" in loser[1] or
                                      "no rollout running" in loser[1]), loser
    d = registry.deployment("fraud")
    assert d.revision == revision + 1  # exactly one change landed
    won = actions[winners[0]]
    assert d.stable_version == (2 if won == "promote" else 1) and d.candidate_version is None
    states = [r.state for r in registry.rollouts("fraud")]
    assert states == ["promoted" if won == "promote" else "aborted"]


def test_racing_rollout_starts_one_wins(
    database_url: str, home: Path, models: Models, registry: Registry
) -> None:
    for k in (1.0, 2.0):
        registry.register("fraud", models.offset(k), **WHO)
    registry.set_stable("fraud", 1, **WHO)
    outcomes = _race([(database_url, str(home), "start", 2) for _ in range(4)])
    assert [o for o, _ in outcomes].count("ok") == 1, outcomes
    assert len(registry.rollouts("fraud")) == 1
