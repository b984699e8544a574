"""The audit trail: signatures, refusals, tamper detection."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import PASSWORDS, write_users

from dashboard.audit import AuditTrail, SignatureError


@pytest.fixture
def trail(tmp_path) -> AuditTrail:
    write_users(tmp_path / "users.toml")
    return AuditTrail(tmp_path / "audit", tmp_path / "users.toml")


def sign(trail, **kw):
    args = {
        "user": "qa",
        "password": PASSWORDS["qa"],
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
        sign(trail, user="engineer", password=PASSWORDS["engineer"])
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


def test_a_four_eyes_release_records_both_signers_with_names_and_meanings(trail):
    record = sign(
        trail,
        decision="release",
        meaning="batch released for distribution",
        second_user="qa2",
        second_password=PASSWORDS["qa2"],
        second_meaning="second QA review: I concur with the release",
    )
    assert (record["user"], record["full_name"], record["role"]) == ("qa", "Quinn Avery", "qa")
    assert (record["second_user"], record["second_full_name"]) == ("qa2", "Sam Okafor")
    assert record["second_meaning"].startswith("second QA review")
    assert trail.verify().ok


@pytest.mark.parametrize(
    ("second_user", "second_password", "problem"),
    [
        ("qa", PASSWORDS["qa"], "second signer must be a different user; got 'qa' twice"),
        ("QA ", PASSWORDS["qa"], "second signer must be a different user"),
        ("qa2", "guess", "second signer: wrong user name or password"),
        ("engineer", PASSWORDS["engineer"], "second signer: user 'engineer' lacks the 'qa' role"),
    ],
    ids=["same-user", "same-user-spelled-differently", "wrong-password", "no-qa-role"],
)
def test_a_second_signature_that_does_not_verify_records_nothing_but_the_refusal(
    trail, second_user, second_password, problem
):
    with pytest.raises(SignatureError, match=problem):
        sign(
            trail,
            decision="release",
            second_user=second_user,
            second_password=second_password,
            second_meaning="second QA review: I concur with the release",
        )
    assert [r["action"] for r in trail.records()] == ["signature_refused"]
    assert trail.records()[0]["second_user"] == second_user
    assert trail.decisions() == {} and trail.verify().ok


def test_a_second_signer_needs_a_meaning(trail):
    with pytest.raises(ValueError, match="second_meaning: the meaning"):
        sign(trail, second_user="qa2", second_password=PASSWORDS["qa2"], second_meaning=" ")
    assert trail.records() == []


def test_held_tells_whether_a_batch_was_ever_on_hold(trail):
    assert not trail.held("B00042")
    sign(trail, decision="hold")
    sign(trail, decision="investigate")
    assert trail.held("B00042") and not trail.held("B00043")


def test_a_trail_written_before_the_second_signer_fields_still_verifies(trail):
    """Records of the first format (no full_name, role, second_*) hash as they did."""
    from dashboard.audit import _FIELDS, GENESIS

    old = {k: None for k in _FIELDS}
    old.update(seq=1, time="2026-12-01T10:00:00.000+00:00", user="qa", action="disposition")
    old.update(batch_id="B00001", decision="hold", reason="old", meaning="old", prev_hash=GENESIS)
    body = json.dumps({k: old[k] for k in _FIELDS}, sort_keys=True, ensure_ascii=False)
    old["hash"] = hashlib.sha256(body.encode()).hexdigest()
    trail.path.write_text(json.dumps(old) + "\n")
    sign(trail, decision="release")
    assert trail.verify().ok and trail.records()[1]["full_name"] == "Quinn Avery"
    # removing a field a newer record was hashed with is tampering
    lines = trail.path.read_text().splitlines()
    newer = json.loads(lines[1])
    del newer["role"]
    trail.path.write_text("\n".join([lines[0], json.dumps(newer)]) + "\n")
    assert trail.verify().first_bad == 2


def test_export_has_the_second_signer_columns(trail, tmp_path):
    sign(trail, second_user="qa2", second_password=PASSWORDS["qa2"], second_meaning="I concur")
    header = trail.export_csv(tmp_path / "trail.csv").read_text().splitlines()[0]
    assert "second_user" in header and "full_name" in header
