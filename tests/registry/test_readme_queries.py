"""The SQL the README gives auditors runs, on SQLite and PostgreSQL alike, against a
real shipped audit log (so the documented queries cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text

from registry.db import Database
from server.audit_spool import AuditEntry

from .test_audit_store import key, shipped  # noqa: F401  (fixtures)

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_queries() -> list[str]:
    body = README.read_text()
    section = body[body.index("## Auditing decisions"):]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block is not None, "the README's auditing section has no SQL block"
    statements = []
    for statement in block.group(1).split(";"):
        lines = [ln for ln in statement.splitlines() if ln.strip() and not
                 ln.strip().startswith("--")]
        if lines:
            statements.append("\n".join(lines))
    return statements


def test_the_readme_has_five_queries() -> None:
    assert len(readme_queries()) == 5


@pytest.mark.parametrize("index", range(5))
def test_each_readme_query_runs(
    index: int, db: Database, shipped: list[AuditEntry]  # noqa: F811
) -> None:
    query = readme_queries()[index]
    with db.read() as s:
        rows = s.execute(text(query)).all()
    if "GROUP BY model, version" in query:  # the daily counts see every decided row
        assert sum(r[3] for r in rows) == sum(e.rows for e in shipped if e.status == "OK")
