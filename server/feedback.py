"""``osprey.v1.Feedback``: ground-truth labels into the audit database (translation only)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from registry import feedback
from registry.db import Database

from .errors import InvalidInput
from .protocol.osprey.v1 import feedback_pb2 as fpb
from .protocol.osprey.v1 import feedback_pb2_grpc as fpb_grpc
from .servicer import translate_errors

MAX_LABELS = 10_000
_OUTCOMES = {
    feedback.STORED: fpb.LabelResult.STORED,
    feedback.ALREADY_STORED: fpb.LabelResult.ALREADY_STORED,
    feedback.UNKNOWN_DECISION: fpb.LabelResult.UNKNOWN_DECISION,
    feedback.CONFLICT: fpb.LabelResult.CONFLICT,
    feedback.INVALID: fpb.LabelResult.INVALID,
}


def _label(item: Any) -> feedback.LabelIn:
    kind = item.WhichOneof("value")
    value = getattr(item, kind) if kind is not None else None
    at = (dt.datetime.fromtimestamp(item.label_time_unix_ms / 1000, dt.UTC)
          if item.label_time_unix_ms > 0 else None)
    return feedback.LabelIn(item.decision_id, item.row_index, value, at, item.source)


class FeedbackServicer(fpb_grpc.FeedbackServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    def _submit(self, labels: list[feedback.LabelIn]) -> list[feedback.LabelOutcome]:
        with self.db.write() as session:
            return feedback.submit(session, labels)

    @translate_errors
    async def Submit(self, request: Any, context: Any) -> Any:
        if len(request.labels) > MAX_LABELS:
            raise InvalidInput(
                f"{len(request.labels)} labels in one call; send at most {MAX_LABELS}")
        outcomes = await asyncio.to_thread(self._submit, [_label(x) for x in request.labels])
        return fpb.SubmitFeedbackResponse(
            results=[fpb.LabelResult(index=o.index, outcome=_OUTCOMES[o.outcome],
                                     message=o.message) for o in outcomes],
            stored=sum(1 for o in outcomes if o.outcome == feedback.STORED),
        )
