"""Ground truth for audited decisions (``osprey.v1.Feedback/Submit``).

Labels are keyed like decisions, by (decision id, row index), and stored once: the
same label again is ``already_stored``; a different label for a row that has one is
a ``conflict`` (the first label stands: ground truth is append-only). A label for a
row the audit log does not hold is ``unknown_decision``, reported per item.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .models import AuditDecision, Feedback

STORED, ALREADY_STORED, UNKNOWN_DECISION, CONFLICT, INVALID = (
    "stored", "already_stored", "unknown_decision", "conflict", "invalid")


@dataclass(frozen=True)
class LabelIn:
    decision_id: str
    row_index: int
    label: bool | float | str | None
    label_at: dt.datetime | None
    source: str


@dataclass(frozen=True)
class LabelOutcome:
    index: int
    outcome: str
    message: str = ""


def submit(session: Session, labels: list[LabelIn]) -> list[LabelOutcome]:
    """Store what can be stored; one outcome per label, in order."""
    now = dt.datetime.now(dt.UTC)
    keys = {(x.decision_id, x.row_index) for x in labels}
    decided: set[tuple[str, int]] = set()
    stored: dict[tuple[str, int], Any] = {}
    key_list = sorted(keys)
    for start in range(0, len(key_list), 500):
        chunk = key_list[start:start + 500]
        decided.update(session.execute(
            select(AuditDecision.decision_id, AuditDecision.row_index)
            .where(tuple_(AuditDecision.decision_id, AuditDecision.row_index).in_(chunk))
        ).tuples())
        stored.update({(d, r): v for d, r, v in session.execute(
            select(Feedback.decision_id, Feedback.row_index, Feedback.label)
            .where(tuple_(Feedback.decision_id, Feedback.row_index).in_(chunk))
        ).tuples()})
    outcomes: list[LabelOutcome] = []
    rows: list[dict[str, Any]] = []
    for i, x in enumerate(labels):
        key = (x.decision_id, x.row_index)
        if not x.decision_id or x.label is None:
            outcomes.append(LabelOutcome(i, INVALID, "a label needs a decision id and a value"))
        elif len(x.source) > 128:
            outcomes.append(LabelOutcome(i, INVALID, "source is longer than 128 characters"))
        elif key not in decided:
            outcomes.append(LabelOutcome(
                i, UNKNOWN_DECISION,
                f"no audited decision {x.decision_id} row {x.row_index} (records reach the "
                "database within about a second of the answer; retry later if it is new)"))
        elif key in stored:
            same = stored[key] == x.label
            outcomes.append(LabelOutcome(
                i, ALREADY_STORED if same else CONFLICT,
                "" if same else f"a different label ({stored[key]!r}) is stored; the first "
                "label stands"))
        else:
            stored[key] = x.label
            rows.append({"decision_id": x.decision_id, "row_index": x.row_index,
                         "label": x.label, "label_at": x.label_at or now, "source": x.source,
                         "received_at": now})
            outcomes.append(LabelOutcome(i, STORED))
    if rows:
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        session.execute(insert(Feedback).on_conflict_do_nothing(), rows)
    return outcomes
