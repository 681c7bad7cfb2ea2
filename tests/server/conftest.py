"""Fixtures: a model repository of small ONNX models and a real server around it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .onnx_models import ONNX_TYPES, add_sub_graph, identity_graph, slow_graph, write_model
from .process import ServerProcess


def build_repository(repo: Path) -> Path:
    """The standard test repository (see each model's config below)."""
    write_model(
        repo, "add_sub", add_sub_graph(16),
        {"max_batch_size": 8, "max_queue_delay_us": 2000, "max_request_rows": 100},
    )
    write_model(repo, "add_sub_nobatch", add_sub_graph(16, batch=False), {"max_batch_size": 0})
    for dt in ONNX_TYPES:
        write_model(repo, f"identity_{dt.lower()}", identity_graph(dt), {"max_batch_size": 64})
    write_model(
        repo, "slow", slow_graph(),
        {"max_batch_size": 4, "max_queue_delay_us": 0, "max_queue_size": 2,
         "priority_levels": 2, "default_priority_level": 2},
    )
    return repo


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def server(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One shared server for read-mostly tests (tests that stop servers start their own)."""
    proc = ServerProcess(model_repository, tmp_path_factory.mktemp("home"))
    yield proc
    proc.stop()
