"""The deployment state machine: set-stable, rollouts, promote, abort, rollback.

Every change bumps the revision by one and appends an event with actor, reason,
before and after; refused changes change nothing.
"""

from __future__ import annotations

import pytest

from registry.errors import (
    DeploymentConflict,
    InvalidTransition,
    NoRolloutInProgress,
    RolloutInProgress,
    SignatureChanged,
    VersionRejected,
)
from registry.records import DeploymentRecord
from registry.service import Registry
from server.errors import InvalidInput, PreconditionFailed

from .conftest import Models

WHO = {"actor": "sre@ops", "reason": "test"}


@pytest.fixture()
def three(registry: Registry, models: Models) -> Registry:
    """fraud v1, v2, v3 (same signature), v1 stable."""
    for k in (1.0, 2.0, 3.0):
        registry.register("fraud", models.offset(k), **WHO)
    registry.set_stable("fraud", 1, **WHO)
    return registry


def _same_deployment(a: DeploymentRecord, b: DeploymentRecord) -> bool:
    return a.state() == b.state()


def test_first_set_stable(registry: Registry, models: Models) -> None:
    registry.register("fraud", models.offset(1.0), **WHO)
    before = registry.deployment("fraud")
    assert (before.stable_version, before.revision) == (None, 0)
    after = registry.set_stable("fraud", 1, actor="ana", reason="go live")
    assert (after.stable_version, after.revision, after.updated_by) == (1, 1, "ana")
    event = registry.history("fraud")[-1]
    assert (event.kind, event.version, event.actor, event.reason) == (
        "stable_set", 1, "ana", "go live")
    assert event.before is not None and event.before["stable_version"] is None
    assert event.after is not None and event.after["stable_version"] == 1


def test_canary_steps_promote_and_rollback(three: Registry) -> None:
    r = three.start_rollout("fraud", 2, "canary", **WHO)
    assert (r.state, r.weight, r.steps, r.baseline_version) == ("running", 10, [10, 25, 50], 1)
    d = three.deployment("fraud")
    assert (d.stable_version, d.candidate_version, d.mode, d.candidate_weight) == (
        1, 2, "canary", 10)
    assert three.step_rollout("fraud", **WHO).weight == 25
    assert three.step_rollout("fraud", **WHO).weight == 50
    with pytest.raises(InvalidTransition, match="last step"):
        three.step_rollout("fraud", **WHO)
    assert three.step_rollout("fraud", weight=80, **WHO).weight == 80
    d = three.promote("fraud", **WHO)
    assert (d.stable_version, d.candidate_version, d.mode, d.previous_version) == (
        2, None, None, 1)
    assert three.rollouts("fraud")[0].state == "promoted"
    d = three.rollback("fraud", actor="oncall", reason="p99 up")
    assert (d.stable_version, d.previous_version) == (1, 2)
    assert three.rollouts("fraud")[0].state == "rolled_back"
    kinds = [e.kind for e in three.history("fraud")]
    assert kinds[-7:] == ["stable_set", "rollout_started", "rollout_stepped", "rollout_stepped",
                          "rollout_stepped", "rollout_promoted", "rolled_back"]
    revisions = [e.after["revision"] for e in three.history("fraud") if e.after and
                 "revision" in e.after]
    assert revisions == list(range(1, len(revisions) + 1))


def test_blue_green_has_no_steps(three: Registry) -> None:
    r = three.start_rollout("fraud", 2, "blue_green", **WHO)
    assert (r.weight, r.steps) == (0, [])
    d = three.deployment("fraud")
    assert (d.candidate_version, d.mode, d.candidate_weight) == (2, "blue_green", 0)
    with pytest.raises(InvalidTransition, match="blue-green rollout has no steps"):
        three.step_rollout("fraud", **WHO)
    with pytest.raises(InvalidInput, match="takes no weight"):
        three.start_rollout("fraud", 3, "blue_green", weight=20, **WHO)


def test_shadow_mirrors_all_by_default(three: Registry) -> None:
    r = three.start_rollout("fraud", 2, "shadow", **WHO)
    assert r.weight == 100
    three.abort("fraud", **WHO)
    r = three.start_rollout("fraud", 2, "shadow", weight=30, **WHO)
    assert r.weight == 30 and three.deployment("fraud").candidate_weight == 30


def test_abort_returns_all_traffic_to_stable(three: Registry) -> None:
    three.start_rollout("fraud", 3, "canary", weight=40, **WHO)
    d = three.abort("fraud", **WHO)
    assert (d.stable_version, d.candidate_version, d.mode, d.candidate_weight) == (
        1, None, None, 0)
    assert three.rollouts("fraud")[0].state == "aborted"
    with pytest.raises(NoRolloutInProgress, match="no rollout running; the last one "
                                                  r"\(version 3\) was aborted"):
        three.abort("fraud", **WHO)


def test_one_rollout_at_a_time(three: Registry) -> None:
    three.start_rollout("fraud", 2, "canary", **WHO)
    before = three.deployment("fraud")
    with pytest.raises(RolloutInProgress, match="already has a canary rollout of version 2"):
        three.start_rollout("fraud", 3, "canary", **WHO)
    with pytest.raises(RolloutInProgress, match="promote or abort it first"):
        three.set_stable("fraud", 3, **WHO)
    with pytest.raises(RolloutInProgress):
        three.rollback("fraud", **WHO)
    assert _same_deployment(three.deployment("fraud"), before)


def test_refused_transitions(three: Registry, registry: Registry, models: Models) -> None:
    with pytest.raises(InvalidTransition, match="is the stable version already"):
        three.start_rollout("fraud", 1, "canary", **WHO)
    with pytest.raises(InvalidTransition, match="already stable"):
        three.set_stable("fraud", 1, **WHO)
    with pytest.raises(InvalidTransition, match="no previous stable version"):
        three.rollback("fraud", **WHO)
    with pytest.raises(NoRolloutInProgress):
        three.promote("fraud", **WHO)
    with pytest.raises(InvalidInput, match="weight must be an integer from 0 to 100"):
        three.start_rollout("fraud", 2, "canary", weight=101, **WHO)
    with pytest.raises(InvalidInput, match="strategy must be one of"):
        three.start_rollout("fraud", 2, "linear", **WHO)
    with pytest.raises(InvalidInput, match="steps must be increasing"):
        three.start_rollout("fraud", 2, "canary", steps=[50, 10], **WHO)
    registry.register("churn", models.offset(1.0), **WHO)
    registry.register("churn", models.offset(2.0), **WHO)
    with pytest.raises(InvalidTransition, match="no stable version to roll out from"):
        registry.start_rollout("churn", 2, "canary", **WHO)


def test_signature_change_needs_explicit_permission(three: Registry, models: Models) -> None:
    three.register("fraud", models.other(), **WHO)  # v4: other inputs and outputs
    before = three.deployment("fraud")
    with pytest.raises(SignatureChanged, match=r"input 'INPUT' removed.*--allow-signature-change"):
        three.start_rollout("fraud", 4, "canary", **WHO)
    with pytest.raises(SignatureChanged):
        three.set_stable("fraud", 4, **WHO)
    assert _same_deployment(three.deployment("fraud"), before)
    three.start_rollout("fraud", 4, "blue_green", allow_signature_change=True, **WHO)
    assert three.deployment("fraud").candidate_version == 4


def test_rejected_version_cannot_deploy(three: Registry) -> None:
    three.reject_version("fraud", 2, actor="server", reason="checksum mismatch on host a")
    v = three.version("fraud", 2)
    assert (v.status, v.status_reason) == ("rejected", "checksum mismatch on host a")
    with pytest.raises(VersionRejected, match="version 2 cannot be deployed: it is rejected "
                                              r"\(checksum mismatch on host a\)"):
        three.start_rollout("fraud", 2, "canary", **WHO)
    assert three.history("fraud")[-1].kind == "version_rejected"


def test_expected_revision_is_compared(three: Registry) -> None:
    at = three.deployment("fraud").revision
    with pytest.raises(DeploymentConflict, match=f"at revision {at}, not {at - 1}"):
        three.start_rollout("fraud", 2, "canary", expected_revision=at - 1, **WHO)
    three.start_rollout("fraud", 2, "canary", expected_revision=at, **WHO)
    assert three.deployment("fraud").revision == at + 1


def test_promote_waits_for_every_live_replica(three: Registry) -> None:
    three.start_rollout("fraud", 2, "blue_green", **WHO)
    three.heartbeat("host-a:1", "host-a", 1, {"fraud": {"revision": 2, "loaded": [1, 2],
                                                        "ready": [1, 2]}})
    three.heartbeat("host-b:1", "host-b", 1, {"fraud": {"revision": 2, "loaded": [1, 2],
                                                        "ready": [1]}})
    three.heartbeat("host-c:1", "host-c", 1, {"churn": {"revision": 1, "loaded": [1],
                                                        "ready": [1]}})
    with pytest.raises(PreconditionFailed, match=r"not loaded and ready on 1 live replica\(s\) "
                                                 r"\(host-b:1\)"):
        three.promote("fraud", **WHO)
    status = three.status("fraud")
    assert [r.id for r in status.replicas] == ["host-a:1", "host-b:1"]
    three.heartbeat("host-b:1", "host-b", 1, {"fraud": {"revision": 2, "loaded": [1, 2],
                                                        "ready": [1, 2]}})
    assert three.promote("fraud", **WHO).stable_version == 2


def test_promote_force_and_dead_replicas(three: Registry) -> None:
    three.start_rollout("fraud", 2, "blue_green", **WHO)
    three.heartbeat("host-b:1", "host-b", 1, {"fraud": {"ready": [1]}})
    with pytest.raises(PreconditionFailed):
        three.promote("fraud", **WHO)
    # a replica that stopped heart-beating is not waited for
    assert three.promote("fraud", live_seconds=0.0, **WHO).stable_version == 2
    three.start_rollout("fraud", 3, "blue_green", **WHO)
    assert three.promote("fraud", force=True, **WHO).stable_version == 3


def test_reason_required_for_every_change(three: Registry) -> None:
    with pytest.raises(InvalidInput, match="a reason is required"):
        three.start_rollout("fraud", 2, "canary", actor="x", reason="")
