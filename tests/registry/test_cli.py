"""The SRE command line, run as a real process against SQLite and PostgreSQL:
readable tables, ``--json``, every write with a reason and an actor, and errors
that name what was wrong (exit code 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from registry import migrate
from tests.server.onnx_models import offset_graph, write_model

from .conftest import Models

REPO_ROOT = Path(__file__).resolve().parents[2]


class Osprey:
    def __init__(self, database_url: str, home: Path) -> None:
        self.env = {**os.environ, "OSPREY_DATABASE_URL": database_url,
                    "OSPREY_HOME": str(home), "OSPREY_ACTOR": "cli-test@ops"}

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([sys.executable, "-m", "server", *args], cwd=REPO_ROOT,
                             env=self.env, capture_output=True, text=True, timeout=120)
        if ok:
            assert out.returncode == 0, f"{args}: {out.stdout}\n{out.stderr}"
        else:
            assert out.returncode == 2, f"{args} should fail: {out.stdout}\n{out.stderr}"
            assert out.stderr.startswith("osprey: error: "), out.stderr
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture()
def osprey(database_url: str, home: Path) -> Osprey:
    return Osprey(database_url, home)


def test_sre_walkthrough(osprey: Osprey, models: Models) -> None:
    v1 = osprey.json("models", "register", "fraud", str(models.offset(1.0)), "--reason",
                     "first model", "--tag", "team=risk")
    assert v1["version"] == 1 and v1["created_by"] == "cli-test@ops"
    out = osprey.run("models", "register", "fraud", str(models.offset(2.0)), "--reason", "v2")
    assert "registered fraud version 2" in out.stdout
    out = osprey.run("deploy", "set-stable", "fraud", "1", "--reason", "go live")
    assert "stable v1, no candidate; revision 1" in out.stdout
    out = osprey.run("rollout", "start", "fraud", "2", "--strategy", "canary", "--weight", "20",
                     "--reason", "try v2")
    assert "canary of v2 from v1, weight 20 %" in out.stdout
    status = osprey.json("rollout", "status", "fraud")
    assert status["deployment"]["candidate_weight"] == 20
    assert status["rollout"]["state"] == "running"
    osprey.run("rollout", "step", "fraud", "--reason", "looks fine")
    assert osprey.json("rollout", "status", "fraud")["deployment"]["candidate_weight"] == 25
    osprey.run("rollout", "promote", "fraud", "--reason", "ship it")
    listing = osprey.run("models", "list").stdout
    assert listing.splitlines()[0].split()[:3] == ["model", "versions", "stable"]
    assert listing.splitlines()[2].split()[:3] == ["fraud", "2", "2"]
    osprey.run("rollout", "rollback", "fraud", "--reason", "p99 regression")
    show = osprey.run("models", "show", "fraud").stdout
    assert "model fraud: stable v1, no candidate, previous v2; revision 5" in show
    history = osprey.json("rollout", "history", "fraud")
    assert [e["kind"] for e in history] == [
        "model_created", "version_registered", "version_registered", "stable_set",
        "rollout_started", "rollout_stepped", "rollout_promoted", "rolled_back"]
    assert {e["actor"] for e in history} == {"cli-test@ops"}
    assert history[-1]["reason"] == "p99 regression"
    text = osprey.run("rollout", "history", "fraud").stdout
    assert "rolled_back" in text and "stable 2->1" in text


def test_errors_name_the_problem(osprey: Osprey, models: Models, tmp_path: Path) -> None:
    err = osprey.run("models", "show", "nope", ok=False).stderr
    assert "model 'nope' is not registered" in err
    bad = tmp_path / "bad.onnx"
    bad.write_text("garbage")
    err = osprey.run("models", "register", "fraud", str(bad), "--reason", "r", ok=False).stderr
    assert "not a loadable ONNX model" in err
    osprey.run("models", "register", "fraud", str(models.offset(1.0)), "--reason", "r")
    osprey.run("models", "register", "fraud", str(models.other()), "--reason", "r")
    osprey.run("deploy", "set-stable", "fraud", "1", "--reason", "r")
    err = osprey.run("rollout", "start", "fraud", "2", "--strategy", "canary", "--reason", "r",
                     ok=False).stderr
    assert "different signature" in err and "--allow-signature-change" in err
    osprey.run("rollout", "start", "fraud", "2", "--strategy", "blue-green", "--reason", "r",
               "--allow-signature-change")
    err = osprey.run("rollout", "start", "fraud", "2", "--strategy", "canary", "--reason", "r",
                     "--allow-signature-change", ok=False).stderr
    assert "already has a blue-green rollout of version 2 running" in err
    err = osprey.run("deploy", "set-stable", "fraud", "1", "--reason", "r", ok=False).stderr
    assert "promote or abort it first" in err
    osprey.run("rollout", "abort", "fraud", "--reason", "wrong version")
    err = osprey.run("deploy", "set-stable", "fraud", "9", "--reason", "r", ok=False).stderr
    assert "model 'fraud' has no version 9 (versions: 1, 2)" in err
    err = osprey.run("rollout", "promote", "fraud", "--reason", "r", ok=False).stderr
    assert "has no rollout running; the last one (version 2) was aborted" in err
    # argparse: --reason is required for writes
    missing = subprocess.run([sys.executable, "-m", "server", "rollout", "abort", "fraud"],
                             cwd=REPO_ROOT, env=osprey.env, capture_output=True, text=True)
    assert missing.returncode == 2 and "--reason" in missing.stderr


def test_out_of_date_schema_names_the_command(tmp_path: Path) -> None:
    osprey = Osprey(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path)
    err = osprey.run("models", "list", ok=False).stderr
    assert "run `osprey db upgrade`" in err
    current = osprey.run("db", "current").stdout
    assert "schema empty" in current and "needs `osprey db upgrade`" in current
    up = osprey.json("db", "upgrade")
    assert up["from"] is None and up["to"] == migrate.head()
    assert osprey.run("models", "list").stdout.strip() == "no models registered"


def test_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    osprey = Osprey("mysql://root@localhost/x", tmp_path)
    assert "unsupported database 'mysql'" in osprey.run("models", "list", ok=False).stderr
    osprey = Osprey("postgresql://postgres@127.0.0.1:1/none", tmp_path)
    assert "is unreachable" in osprey.run("models", "list", ok=False).stderr


def test_import_a_model_repository(osprey: Osprey, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "fraud", offset_graph(1.0), {"max_batch_size": 16}, version=1)
    write_model(repo, "fraud", offset_graph(2.0), None, version=3)
    write_model(repo, "churn", offset_graph(5.0), {"version_policy": {"all": True}})
    imported = osprey.json("models", "import", str(repo), "--reason", "move to registry")
    rows = {(i["model"], i["source_version"]): i for i in imported}
    assert rows[("fraud", 1)]["version"] == 1 and rows[("fraud", 3)]["version"] == 2
    assert rows[("fraud", 3)]["stable"] and not rows[("fraud", 1)]["stable"]
    assert rows[("churn", 1)]["stable"]
    shown = osprey.json("models", "show", "fraud")
    assert shown["model"]["settings"] == {"max_batch_size": 16}
    assert shown["deployment"]["stable_version"] == 2
    again = osprey.json("models", "import", str(repo), "--reason", "again")
    assert not any(i["new"] for i in again)
    assert len(osprey.json("models", "show", "fraud")["versions"]) == 2
