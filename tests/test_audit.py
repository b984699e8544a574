"""The audit trail: signatures, refusals, tamper detection."""

from __future__ import annotations

import json

import pytest

from connectors.security import ensure_demo_users
from dashboard.audit import AuditTrail, SignatureError


@pytest.fixture
def trail(tmp_path) -> AuditTrail:
    ensure_demo_users(tmp_path / "users.toml")
    return AuditTrail(tmp_path / "audit", tmp_path / "users.toml")


def sign(trail, **kw):
    args = {
        "user": "qa",
        "password": "qa-demo",
        "batch_id": "B00042",
        "decision": "hold",
        "reason": "DO below envelope for 3 h",
        "meaning": "I reviewed the batch record and hold the batch",
        "model_version": "deviation-1",
        "score": 0.83,
    }
    return trail.sign(**{**args, **kw})


def test_a_signed_disposition_records_who_what_why_and_the_model(trail):
    record = sign(trail)
    assert record["user"] == "qa" and record["decision"] == "hold"
    assert record["model_version"] == "deviation-1" and record["score"] == 0.83
    assert record["prev_hash"] == "0" * 64 and len(record["hash"]) == 64
    sign(trail, decision="release", reason="investigation closed: probe drift")
    assert trail.verify().ok
    assert trail.decisions()["B00042"]["decision"] == "release"


def test_wrong_password_and_missing_role_are_refused_and_logged(trail):
    with pytest.raises(SignatureError, match="wrong user name or password"):
        sign(trail, password="guess")
    with pytest.raises(SignatureError, match="lacks the 'qa' role"):
        sign(trail, user="engineer", password="engineer-demo")
    actions = [r["action"] for r in trail.records()]
    assert actions == ["signature_refused", "signature_refused"]
    assert trail.decisions() == {}
    assert trail.verify().ok


def test_empty_reason_or_unknown_decision_records_nothing(trail):
    with pytest.raises(ValueError, match="reason: must not be empty"):
        sign(trail, reason="  ")
    with pytest.raises(ValueError, match="decision: must be one of"):
        sign(trail, decision="ship it")
    assert trail.records() == []


@pytest.mark.parametrize("how", ["edit", "delete", "swap"])
def test_tampering_is_detected(trail, how):
    for decision in ("investigate", "hold", "release"):
        sign(trail, decision=decision)
    lines = trail.path.read_text().splitlines()
    if how == "edit":
        record = json.loads(lines[1])
        record["decision"] = "reject"
        lines[1] = json.dumps(record)
    elif how == "delete":
        del lines[1]
    else:
        lines[0], lines[1] = lines[1], lines[0]
    trail.path.write_text("\n".join(lines) + "\n")
    result = trail.verify()
    assert not result.ok and result.first_bad in (1, 2)


def test_export_is_complete(trail, tmp_path):
    sign(trail)
    out = trail.export_csv(tmp_path / "trail.csv")
    text = out.read_text()
    assert "B00042" in text and "hash" in text.splitlines()[0]
