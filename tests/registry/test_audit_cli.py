"""``osprey audit query|export|prune|verify`` as a real process (SQLite)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from registry import migrate
from registry.audit_chain import load_key
from registry.db import Database

from .test_audit_store import entry, ship, write

REPO_ROOT = Path(__file__).resolve().parents[2]


def osprey(home: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "server", *args, "--home", str(home)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OSPREY_ACTOR": "auditor@bank"})
    assert out.returncode == code, out.stdout + out.stderr
    return out


def test_auditor_walkthrough(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = Database(f"sqlite:///{home / 'osprey.db'}")
    migrate.upgrade(db)
    key = load_key(home / "audit.key", create=True)
    base = time.time_ns() - 7200 * 10**9
    entries = [entry(1 + i % 2, request_id=f"txn-{i}") for i in range(6)]
    for i, e in enumerate(entries):
        e.at_ns = base + i * 60 * 10**9
    ship(write(tmp_path / "spool", key, entries), db)

    assert "every chain verified" in osprey(home, "audit", "verify").stdout
    found = json.loads(osprey(home, "audit", "query", "--request-id", "txn-3", "--json").stdout)
    assert [r["decision_id"] for r in found] == [entries[3].decision_id]
    assert [d["row_index"] for d in found[0]["decisions"]] == [0, 1]
    table = osprey(home, "audit", "query", "--since", "2000-01-01").stdout
    assert table.splitlines()[0].split()[:3] == ["at", "(UTC)", "decision"]
    assert len(table.splitlines()) == 2 + 6

    export = tmp_path / "decisions.csv"
    osprey(home, "audit", "export", "--output", str(export))
    with export.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(e.rows for e in entries) == 9
    assert json.loads(rows[1]["inputs"])["INPUT"] == [0.0]
    assert rows[0]["label"] == "" and rows[0]["version"] == "1"

    parquet = tmp_path / "decisions.parquet"
    osprey(home, "audit", "export", "--format", "parquet", "--output", str(parquet))
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    assert table.num_rows == 9 and table.column_names == list(rows[0])
    assert str(table.schema.field("at").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("score").type) == "double"
    assert table.column("decision_id").to_pylist() == [r["decision_id"] for r in rows]
    assert table.column("row_index").to_pylist() == [int(r["row_index"]) for r in rows]
    assert [t.isoformat() for t in table.column("at").to_pylist()] == [r["at"] for r in rows]
    assert table.column("label").to_pylist() == [None] * 9
    err = osprey(home, "audit", "export", "--format", "parquet", code=2).stderr
    assert "--format parquet writes a file: give --output FILE" in err

    cut = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime((base + 150 * 10**9) / 1e9))
    pruned = json.loads(osprey(home, "audit", "prune", "--before", cut, "--reason",
                               "retention", "--json").stdout)
    assert pruned["requests"] == 3
    assert "every chain verified" in osprey(home, "audit", "verify").stdout
    from registry.service import Registry

    (event,) = [e for e in Registry(db, home).history() if e.kind == "audit_pruned"]
    assert (event.actor, event.reason) == ("auditor@bank", "retention")
    assert event.after is not None and event.after["requests"] == 3
    with db.write() as s:
        from sqlalchemy import text

        s.execute(text("UPDATE audit_decisions SET decision = 'true'"))
        s.execute(text("UPDATE audit_requests SET error = 'x' WHERE seq = 5"))
    tampered = osprey(home, "audit", "verify", code=1).stdout
    assert "AUDIT LOG TAMPERED" in tampered and "edited" in tampered
    err = osprey(home, "audit", "query", code=2).stderr
    assert "give --decision-id, --request-id, or --since" in err
    db.dispose()
