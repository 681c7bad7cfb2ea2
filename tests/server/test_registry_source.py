"""``RegistrySource``: what a replica prepares from the registry (no server needed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from registry import migrate
from registry.db import Database
from registry.service import Registry
from server.errors import ModelNotFound
from server.registry_source import RegistrySource
from server.router import Route

from .onnx_models import offset_graph, write_model

WHO = {"actor": "test@ops", "reason": "test"}
WINDOW = 600.0


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    db = Database(f"sqlite:///{tmp_path / 'osprey.db'}")
    migrate.upgrade(db)
    reg = Registry(db, tmp_path / "home")
    for k in (1, 2, 3):
        reg.register("fraud", write_model(tmp_path / "onnx", f"v{k}", offset_graph(k), None),
                     **WHO)
    return reg


def test_undeployed_models_are_not_served(registry: Registry, tmp_path: Path) -> None:
    source = RegistrySource(registry, tmp_path / "cache", WINDOW)
    assert source.refresh() == []
    assert source.model_names() == []
    with pytest.raises(ModelNotFound, match="osprey deploy set-stable fraud VERSION"):
        source.definition("fraud")


def test_definition_follows_the_deployment(registry: Registry, tmp_path: Path) -> None:
    source = RegistrySource(registry, tmp_path / "cache", WINDOW)
    registry.set_stable("fraud", 1, **WHO)
    assert source.refresh() == ["fraud"]
    first = source.definition("fraud")
    assert sorted(first.artifacts) == [1] and first.content_addressed
    assert first.route == Route(1, None, 0, None, 1)
    assert first.available == (1, 2, 3)
    assert source.refresh() == []  # nothing changed: nothing to re-apply
    registry.start_rollout("fraud", 2, "canary", weight=20, **WHO)
    assert source.refresh() == ["fraud"]
    canary = source.definition("fraud")
    assert sorted(canary.artifacts) == [1, 2]
    assert canary.route == Route(1, 2, 20, "canary", 2)


def test_previous_stable_stays_for_the_rollback_window(
    registry: Registry, tmp_path: Path
) -> None:
    source = RegistrySource(registry, tmp_path / "cache", WINDOW)
    registry.set_stable("fraud", 1, **WHO)
    switched = registry.set_stable("fraud", 2, **WHO).updated_at
    source.refresh(now=switched + dt.timedelta(seconds=WINDOW - 1))
    assert sorted(source.definition("fraud").artifacts) == [1, 2]
    # the window passes: the same revision, but v1 is let go
    assert source.refresh(now=switched + dt.timedelta(seconds=WINDOW + 1)) == ["fraud"]
    assert sorted(source.definition("fraud").artifacts) == [2]


def test_settings_change_is_applied(registry: Registry, tmp_path: Path) -> None:
    source = RegistrySource(registry, tmp_path / "cache", WINDOW)
    registry.set_stable("fraud", 1, **WHO)
    source.refresh()
    registry.set_settings("fraud", {"max_batch_size": 16}, **WHO)
    assert source.refresh() == ["fraud"]
    assert source.definition("fraud").settings.max_batch_size == 16
