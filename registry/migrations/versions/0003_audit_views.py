"""Views for auditors: decisions with their feedback, and daily counts and rates.

``decisions_with_feedback``  every decided row with its ground-truth label (if any).
``daily_decisions``          per UTC day, model and version: decisions, mean score and
                             the share of positive decisions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_FEEDBACK = """
CREATE VIEW decisions_with_feedback AS
SELECT d.decision_id, d.row_index, d.at, d.model, d.version, d.route, d.status,
       d.score, d.decision, f.label, f.label_at, f.source AS label_source
  FROM audit_decisions d
  LEFT JOIN feedback f ON f.decision_id = d.decision_id AND f.row_index = d.row_index
"""

DAILY = """
CREATE VIEW daily_decisions AS
SELECT {day} AS day, model, version, count(*) AS decisions, avg(score) AS mean_score,
       avg(CASE WHEN decision = 'true' THEN 1.0 WHEN decision = 'false' THEN 0.0 END)
         AS positive_rate
  FROM audit_decisions
 GROUP BY {day}, model, version
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute(WITH_FEEDBACK)
    op.execute(DAILY.format(day="CAST(at AT TIME ZONE 'UTC' AS date)" if postgres
                            else "date(at)"))


def downgrade() -> None:
    op.execute("DROP VIEW daily_decisions")
    op.execute("DROP VIEW decisions_with_feedback")
