"""The audit writer's encoding: personal data only as keyed hashes; any tensor type."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from native.feature_fit import encode_bytes
from server.audit_spool import AuditEntry, decided_rows, serialise

CARDS = [b"4111111111111111", b"5500005555555559", b"4111111111111111"]


def _entry(**changes: object) -> AuditEntry:
    base = dict(
        decision_id="d", at_ns=time.time_ns(), request_id="", routing_key="", model="m",
        version=1, route="stable", rows=3, status="OK", error="", latency_us=1, caller="",
        principal="", trace_id="",
        inputs={"card_id": (encode_bytes(CARDS), 3),
                "amount": np.array([[1.5], [2.0], [np.nan]], np.float32)},
        outputs={"score": np.array([[0.1], [0.9], [0.5]], np.float32)},
        personal=frozenset({"card_id"}),
    )
    base.update(changes)
    return AuditEntry(**base)  # type: ignore[arg-type]


def test_personal_columns_are_keyed_hashes_never_clear() -> None:
    fields = serialise(_entry(), "s", 1, pii_key=b"k" * 32)
    text = json.dumps(fields)
    assert "4111" not in text and "5500" not in text
    cards = fields["inputs"]["card_id"]
    assert all(c.startswith("hmac-sha256:") for c in cards)
    assert cards[0] == cards[2] != cards[1]  # equal values stay comparable
    other_key = serialise(_entry(), "s", 1, pii_key=b"j" * 32)["inputs"]["card_id"]
    assert other_key[0] != cards[0]  # keyed: nothing to look up without the key
    assert fields["inputs"]["amount"] == [[1.5], [2.0], ["NaN"]]


def test_numeric_personal_columns_are_hashed_too() -> None:
    entry = _entry(personal=frozenset({"amount"}))
    amounts = serialise(entry, "s", 1, pii_key=b"k" * 32)["inputs"]["amount"]
    assert [len(row) for row in amounts] == [1, 1, 1]
    assert all(str(v[0]).startswith("hmac-sha256:") for v in amounts)


def test_decisions_follow_the_declared_score_and_threshold() -> None:
    fields = serialise(_entry(personal=frozenset()), "s", 1)
    outputs = fields["outputs"]
    assert decided_rows(3, "OK", outputs, "score", None, 0.5) == [
        (0, 0.1, "false"), (1, 0.9, "true"), (2, 0.5, "true")]
    assert decided_rows(3, "INTERNAL", outputs, "score", None, 0.5) == []
    plain = decided_rows(3, "OK", outputs, None, None, None)  # a plain model: rows, no score
    assert plain == [(0, None, None), (1, None, None), (2, None, None)]


# -- the write path: records queued by requests, flushed once per loop iteration -----------


def _spooled(folder: Path) -> list[dict[str, object]]:
    """The spooled requests, oldest first, as the shipper reads them."""
    from registry.audit_store import REQUEST_COLUMNS
    from server.audit_shipper import read_segment

    return [dict(zip(REQUEST_COLUMNS, r, strict=True)) for p in sorted(folder.iterdir())
            for r in read_segment(p).requests]


def test_a_record_that_cannot_be_built_refuses_its_answer_and_leaves_no_gap(
    tmp_path: Path,
) -> None:
    """Strict: the answer whose record failed to build is refused (INTERNAL, a defect);
    the records around it are written, and the chain goes on without a hole."""
    from server.audit_spool import AuditLog

    def broken() -> AuditEntry:
        raise KeyError("a defect")

    async def run() -> list[BaseException | None]:
        log = AuditLog(tmp_path, b"k" * 32, "strict", seal_seconds=0.05)
        log.start()
        waits = [log.submit(lambda: _entry(decision_id="a")), log.submit(broken),
                 log.submit(lambda: _entry(decision_id="c"))]
        outcomes = await asyncio.gather(*(w for w in waits if w is not None),
                                        return_exceptions=True)
        await asyncio.to_thread(log.stop)
        return list(outcomes)

    outcomes = asyncio.run(run())
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], RuntimeError) and "KeyError" in str(outcomes[1])
    records = [r for r in _spooled(next(tmp_path.iterdir())) if r.get("kind") != "genesis"]
    assert [(r["decision_id"], r["seq"]) for r in records] == [("a", 1), ("c", 2)]


def test_stop_writes_what_was_queued_but_not_yet_flushed(tmp_path: Path) -> None:
    from server.audit_spool import AuditLog

    async def run() -> None:
        log = AuditLog(tmp_path, b"k" * 32, "relaxed", seal_seconds=0.05)
        log.start()
        for i in range(5):
            assert log.submit(lambda i=i: _entry(decision_id=f"d{i}")) is None
        log.stop()  # before the loop ran the flush it scheduled

    asyncio.run(run())
    records = [r for r in _spooled(next(tmp_path.iterdir())) if r.get("kind") != "genesis"]
    assert [r["decision_id"] for r in records] == [f"d{i}" for i in range(5)]


def test_latency_is_taken_when_the_answer_was_ready_not_when_the_entry_is_built() -> None:
    from server.audit_entries import audit_success
    from server.inference import InferenceRequest, InferenceResult

    request = InferenceRequest("m", "", "r1", (), (), received_ns=1_000_000)
    result = InferenceResult("m", "1", "r1", "d", ())
    entry = audit_success(request, result, None, answered_ns=4_500_000)
    assert entry.latency_us == 3_500


def test_a_waited_on_record_does_not_wait_for_a_relaxed_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shadow record (nobody waits) schedules a batch for later; a strict answer
    queued after it is flushed at the end of the iteration, and takes the shadow
    record with it, in order."""
    from server import audit_spool
    from server.audit_spool import AuditLog

    monkeypatch.setattr(audit_spool, "BATCH_SECONDS", 3600.0)

    async def run() -> None:
        log = AuditLog(tmp_path, b"k" * 32, "strict", seal_seconds=0.05)
        log.start()
        log.record_nowait(_entry(decision_id="shadow", route="shadow"))
        await asyncio.wait_for(log.record(_entry(decision_id="answer")), 10)
        await asyncio.to_thread(log.stop)

    asyncio.run(run())
    records = [r for r in _spooled(next(tmp_path.iterdir())) if r.get("kind") != "genesis"]
    assert [r["decision_id"] for r in records] == ["shadow", "answer"]


def test_a_segment_reads_back_each_records_decided_rows(tmp_path: Path) -> None:
    """Scored, failed and plain records in one segment: the shipper parses the scored
    ones' outputs together and still gives each record its own rows."""
    from server.audit_spool import AuditLog

    async def run() -> None:
        log = AuditLog(tmp_path, b"k" * 32, "relaxed", seal_seconds=0.05)
        log.start()
        log.submit(lambda: _entry(decision_id="scored", score_output="score", threshold=0.5))
        log.submit(lambda: _entry(decision_id="failed", status="INTERNAL", outputs={},
                                  score_output="score", threshold=0.5))
        log.submit(lambda: _entry(decision_id="plain", rows=2,
                                  outputs={"score": np.array([[0.3], [0.7]], np.float32)}))
        log.submit(lambda: _entry(decision_id="high", threshold=0.2, score_output="score",
                                  outputs={"score": np.array([[0.3], [0.1], [0.2]],
                                                             np.float32)}))
        await asyncio.to_thread(log.stop)

    asyncio.run(run())
    from server.audit_shipper import read_segment

    decided: dict[str, list[tuple[object, ...]]] = {
        r["decision_id"]: [] for r in _spooled(next(tmp_path.iterdir()))}  # type: ignore[misc]
    at = {r["decision_id"]: r["at"] for r in _spooled(next(tmp_path.iterdir()))}
    for segment in sorted(next(tmp_path.iterdir()).iterdir()):
        for did, i, route, when, model, _version, status, score, decision in read_segment(
                segment).decisions:
            assert (route, when, model, status) == ("stable", at[did], "m", "OK")
            decided[did].append((i, score, decision))
    assert decided == {
        "scored": [(0, pytest.approx(0.1), "false"), (1, pytest.approx(0.9), "true"),
                   (2, 0.5, "true")],
        "failed": [],
        "plain": [(0, None, None), (1, None, None)],
        "high": [(0, pytest.approx(0.3), "true"), (1, pytest.approx(0.1), "false"),
                 (2, pytest.approx(0.2), "true")],
    }
