"""The audit writer's encoding: personal data only as keyed hashes; any tensor type."""

from __future__ import annotations

import json
import time

import numpy as np

from native.feature_fit import encode_bytes
from server.audit_spool import AuditEntry, decisions_of, serialise

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
    rows = decisions_of(fields, "score", None, 0.5)
    assert [(r["row_index"], r["decision"]) for r in rows] == [
        (0, "false"), (1, "true"), (2, "true")]
    assert decisions_of({**fields, "status": "INTERNAL"}, "score", None, 0.5) == []
    plain = decisions_of(fields, None, None, None)  # a plain model: rows, no score
    assert [(r["score"], r["decision"]) for r in plain] == [(None, None)] * 3
