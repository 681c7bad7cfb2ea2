"""``osprey.v1.Feedback/Submit`` against a real server: labels for audited decisions,
stored once, per-item outcomes, joined in the ``decisions_with_feedback`` view."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from sqlalchemy import func, select, text

from registry.db import Database
from registry.models import AuditDecision
from server.protocol.osprey.v1 import feedback_pb2 as fpb
from server.protocol.osprey.v1 import feedback_pb2_grpc as fpb_grpc

from .onnx_models import offset_graph, write_model
from .process import ServerProcess

Outcome = fpb.LabelResult


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServerProcess, Database, list[str]]:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "fraud", offset_graph(0.0),
                {"max_batch_size": 8, "score_output": "OUTPUT", "decision": {"threshold": 0.5}})
    home = tmp_path_factory.mktemp("home")
    server = ServerProcess(repo, home)
    client = grpcclient.InferenceServerClient(server.url)
    ids = []
    for rows in (1, 3):
        tensor = grpcclient.InferInput("INPUT", [rows, 1], "FP32")
        tensor.set_data_from_numpy(np.linspace(0, 1, rows, dtype=np.float32).reshape(rows, 1))
        result = client.infer("fraud", [tensor])
        ids.append(result.get_response().parameters["osprey_decision_id"].string_param)
    client.close()
    db = Database(f"sqlite:///{home / 'osprey.db'}")
    end = time.monotonic() + 20
    while time.monotonic() < end:
        with db.read() as s:
            if s.scalar(select(func.count()).select_from(AuditDecision)) == 4:
                break
        time.sleep(0.1)
    yield server, db, ids
    server.stop()
    db.dispose()


def submit(server: ServerProcess, *labels: fpb.Label) -> fpb.SubmitFeedbackResponse:
    with grpc.insecure_channel(server.url) as channel:
        stub = fpb_grpc.FeedbackStub(channel)
        return stub.Submit(fpb.SubmitFeedbackRequest(labels=list(labels)), timeout=10)


def test_labels_are_stored_once_and_reported_per_item(
    served: tuple[ServerProcess, Database, list[str]]
) -> None:
    server, db, (one, three) = served
    answer = submit(
        server,
        fpb.Label(decision_id=one, row_index=0, bool_label=True, source="chargeback",
                  label_time_unix_ms=1_790_000_000_000),
        fpb.Label(decision_id=three, row_index=2, number_label=0.0, source="analyst"),
        fpb.Label(decision_id=three, row_index=7, bool_label=True),  # no such row
        fpb.Label(decision_id="01a2ffff-0000-7000-8000-000000000000", row_index=0,
                  bool_label=False),  # unknown decision
        fpb.Label(decision_id=one, row_index=0),  # no value
    )
    assert [r.outcome for r in answer.results] == [
        Outcome.STORED, Outcome.STORED, Outcome.UNKNOWN_DECISION, Outcome.UNKNOWN_DECISION,
        Outcome.INVALID]
    assert answer.stored == 2
    assert "no audited decision" in answer.results[2].message
    again = submit(server,
                   fpb.Label(decision_id=one, row_index=0, bool_label=True),
                   fpb.Label(decision_id=one, row_index=0, bool_label=False))
    assert [r.outcome for r in again.results] == [Outcome.ALREADY_STORED, Outcome.CONFLICT]
    assert "the first label stands" in again.results[1].message
    with db.read() as s:
        joined = s.execute(text(
            "SELECT decision_id, row_index, decision, label, label_source "
            "FROM decisions_with_feedback ORDER BY decision_id, row_index")).all()
        daily = s.execute(text("SELECT model, version, decisions FROM daily_decisions")).all()
    labelled = {(d, i): (decision, label, source) for d, i, decision, label, source in joined}
    assert len(joined) == 4
    assert labelled[(one, 0)][1:] in ((True, "chargeback"), ("true", "chargeback"))
    assert labelled[(three, 2)][2] == "analyst"
    assert labelled[(three, 0)][1] is None
    assert daily == [("fraud", 1, 4)]


def test_too_many_labels_is_invalid_argument(
    served: tuple[ServerProcess, Database, list[str]]
) -> None:
    server, _, _ = served
    labels = [fpb.Label(decision_id="x", row_index=0, bool_label=True)] * 10_001
    with pytest.raises(grpc.RpcError) as info:
        submit(server, *labels)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
