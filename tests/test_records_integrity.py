"""Tamper-evident records: the probes of issue 14 against the audit trail and the registry.

Each test edits the real files the way the tester did (recomputing the SHA-256 hashes so
that the unkeyed chain of earlier versions would still pass) and checks that the signed,
anchored logs catch it, that nothing downstream uses the edited data, and that the
commands report it with their exit codes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skops.io

from connectors.security import hash_password
from connectors.signed_log import KEY_ENV, init_key
from dashboard.audit import _FIELDS, GENESIS, AuditTrail, integrity_alarms
from dashboard.events import acknowledgements
from dashboard.whatif import batch_outcomes
from quality.artefact import dump_model, load_model_bytes
from quality.errors import RegistryError
from quality.registry import Registry, load_model
from quality.registry import _digest as registry_digest

PASSWORDS = {"qa": "qa-pass-1234", "qa2": "qa2-pass-1234", "viewer": "viewer-pass-1234"}
ROLES = {"qa": ["qa"], "qa2": ["qa"], "viewer": ["viewer"]}


@pytest.fixture
def store(tmp_path) -> Path:
    """A data dir with three users (known test passwords)."""
    lines = []
    for user, password in PASSWORDS.items():
        lines += [
            f"[users.{user}]",
            f'password = "{hash_password(password)}"',
            f"roles = {json.dumps(ROLES[user])}",
            f'full_name = "{user.upper()} Tester"',
            "",
        ]
    (tmp_path / "users.toml").write_text("\n".join(lines))
    return tmp_path


def trail_of(store: Path) -> AuditTrail:
    return AuditTrail(store / "audit", store / "users.toml")


def sign(trail: AuditTrail, batch_id: str, decision: str) -> dict:
    return trail.sign(
        user="qa",
        password=PASSWORDS["qa"],
        batch_id=batch_id,
        decision=decision,
        reason=f"{decision}: reviewed",
        meaning=f"I {decision} the batch",
    )


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rewrite_audit(path: Path, records: list[dict]) -> None:
    """Write ``records`` back with seq and the SHA-256 chain recomputed (the old check)."""
    prev = GENESIS
    for seq, r in enumerate(records, start=1):
        r.update(seq=seq, prev_hash=prev)
        content = {k: r.get(k) for k in _FIELDS}
        content.update({k: r[k] for k in r if k not in (*_FIELDS, "hash", "key_id", "mac")})
        r["hash"] = hashlib.sha256(
            json.dumps(content, sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()
        prev = r["hash"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def biotwin(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "biotwin", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


# ---------------------------------------------------------------------- audit trail
def test_deleting_the_newest_record_is_detected_and_stays_detected(store):
    trail = trail_of(store)
    for decision in ("hold", "investigate", "reject"):
        sign(trail, "B00042", decision)
    kept = trail.path.read_text().splitlines()[:2]
    trail.path.write_text("\n".join(kept) + "\n")
    check = trail.verify()
    assert not check.ok and check.first_bad == 3
    assert "newest records removed: the anchor holds seq 3" in check.problem
    sign(trail, "B00043", "hold")  # a later signature does not heal the gap
    check = trail.verify()
    assert not check.intact and "record 3 is missing" in check.problem


def test_reject_rewritten_as_release_with_recomputed_hashes_is_not_used(store):
    trail = trail_of(store)
    sign(trail, "B00042", "hold")
    sign(trail, "B00042", "reject")
    sign(trail, "B00043", "release")
    records = lines_of(trail.path)
    records[1]["decision"] = "release"
    rewrite_audit(trail.path, records)
    check = trail.verify()
    assert not check.intact and check.first_bad == 2
    assert "mac does not match" in check.problem
    decided = trail.decisions()
    assert decided["B00042"]["decision"] == "hold"  # the verified prefix, not the edit
    assert "B00043" not in decided and decided.verification.first_bad == 2
    outcomes = batch_outcomes(store)  # what KPIs and scenario outcomes count
    assert "B00042" not in set(outcomes["batch_id"])
    assert "does not verify" in outcomes.attrs["integrity"]
    alarms = integrity_alarms(store)
    assert [a["severity"] for a in alarms] == ["high"]
    assert "audit trail does not verify" in alarms[0]["message"]


def test_removing_refusals_and_recomputing_hashes_is_detected(store):
    trail = trail_of(store)
    sign(trail, "B00042", "hold")
    for _ in range(4):
        with pytest.raises(PermissionError):
            trail.sign(
                user="viewer",
                password=PASSWORDS["viewer"],
                batch_id="B00042",
                decision="release",
                reason="r",
                meaning="m",
            )
    sign(trail, "B00042", "release")
    records = [r for r in lines_of(trail.path) if r["action"] != "signature_refused"]
    rewrite_audit(trail.path, records)
    check = trail.verify()
    assert not check.intact and check.first_bad == 2
    assert trail.decisions()["B00042"]["decision"] == "hold"


def test_an_unreadable_line_is_reported_never_stops_signing_nor_the_pages(store):
    trail = trail_of(store)
    sign(trail, "B00042", "hold")
    with open(trail.path, "a") as fh:
        fh.write('{"seq": 2, "action": "disposition", "decis')  # a torn write, no newline
    assert batch_outcomes(store).empty  # the scenarios and triage inputs still work
    assert acknowledgements(trail) == {}
    record = sign(trail, "B00042", "reject")  # signing goes on
    assert record["seq"] == 2
    check = trail.verify()
    assert check.intact and not check.ok
    assert check.malformed[0][0] == 2 and check.malformed[0][1].startswith("not JSON")
    assert trail.decisions()["B00042"]["decision"] == "reject"
    assert not batch_outcomes(store).iloc[0]["good"]
    assert [a["severity"] for a in integrity_alarms(store)] == ["medium"]


def test_an_unreadable_line_in_place_of_a_signed_record_breaks_the_chain(store):
    trail = trail_of(store)
    for decision in ("hold", "reject", "investigate"):
        sign(trail, "B00042", decision)
    lines = trail.path.read_text().splitlines()
    lines[1] = "this was a reject"
    trail.path.write_text("\n".join(lines) + "\n")
    check = trail.verify()
    assert not check.intact and check.first_bad == 2 and check.malformed[0][0] == 2
    assert trail.decisions()["B00042"]["decision"] == "hold"


def test_a_record_signed_with_another_key_is_reported_as_such(store, tmp_path, monkeypatch):
    trail = trail_of(store)
    sign(trail, "B00042", "hold")
    other = init_key(tmp_path / "other" / "records.key")
    monkeypatch.setenv(KEY_ENV, str(other.path))
    check = trail.verify()
    assert not check.intact and "signed with another key" in check.problem
    assert other.key_id in check.problem


def test_legacy_records_are_reported_until_adopted(store, tmp_path):
    trail = trail_of(store)
    old = {k: None for k in _FIELDS}
    old.update(seq=1, time="2026-12-01T10:00:00.000+00:00", user="qa", action="disposition")
    old.update(batch_id="B00001", decision="reject", reason="old", meaning="old")
    rewrite_audit(trail.path, [old])
    check = trail.verify()
    assert not check.intact and "unsigned legacy records" in check.problem
    assert trail.decisions() == {}
    done = biotwin("keys", "init", "--adopt", "--data-dir", str(store))
    assert done.returncode == 0, done.stderr
    assert "audit trail" in done.stdout and "adopted as found" in done.stdout
    check = trail.verify()
    assert check.ok and check.adopted == 1
    assert trail.decisions()["B00001"]["decision"] == "reject"
    lines = trail.path.read_text().splitlines()  # the adopted bytes are fixed from now on
    lines[0] = lines[0].replace('"reject"', '"release"')
    trail.path.write_text("\n".join(lines) + "\n")
    assert not trail.verify().intact


# ---------------------------------------------------------------------- commands
def test_audit_verify_exit_codes(store, tmp_path):
    trail = trail_of(store)
    sign(trail, "B00042", "hold")
    sign(trail, "B00042", "release")
    intact = biotwin("audit", "verify", "--data-dir", str(store))
    assert intact.returncode == 0 and "verified" in intact.stdout
    lines = trail.path.read_text().splitlines()
    trail.path.write_text(lines[0] + "\n")
    broken = biotwin("audit", "verify", "--data-dir", str(store))
    assert broken.returncode == 1
    assert "breaks at seq 2" in broken.stdout and "newest records removed" in broken.stdout
    missing = tmp_path / "nowhere" / "records.key"
    no_key = biotwin("audit", "verify", "--data-dir", str(store), env={KEY_ENV: str(missing)})
    assert no_key.returncode == 2 and "biotwin keys init" in no_key.stderr


def test_keys_init_makes_a_private_key_and_never_replaces_it(tmp_path):
    path = tmp_path / "cfg" / "records.key"
    made = biotwin("keys", "init", env={KEY_ENV: str(path)})
    assert made.returncode == 0, made.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    again = biotwin("keys", "init", env={KEY_ENV: str(path)})
    assert again.returncode == 2 and "never replaced" in again.stderr
    assert path.read_bytes() == before


# ---------------------------------------------------------------------- model registry
META = {
    "family": "deviation",
    "created": "2026-12-05T02:03:36+00:00",
    "model_sha256": "ab" * 32,
    "features": [],
    "metrics": {"headline": {"auc_p50": 0.86}},
}


@pytest.fixture
def registry(store) -> Registry:
    return Registry(store / "models")


def test_a_refusal_edited_into_an_approval_is_refused_by_score(store, registry):
    version = registry.register({"model": "stand-in"}, META)
    with pytest.raises(RegistryError, match="approval refused"):
        registry.approve(
            version, user="qa", password="guess", reason="r", users_file=store / "users.toml"
        )
    records = lines_of(registry.log)
    records[1].update(event="approved", reason="ok", meaning="fit for use")
    prev = GENESIS
    for r in records:  # recompute the unkeyed chain as the tester did
        r["prev_hash"] = prev
        r["hash"] = prev = registry_digest({k: v for k, v in r.items() if k != "hash"})
    registry.log.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(RegistryError, match=r"does not verify at seq 2: .*mac does not match"):
        registry.load_approved("deviation")
    scored = biotwin("score", "--twin", str(store / "no-twin"), "--data-dir", str(store))
    assert scored.returncode != 0
    assert "does not verify at seq 2" in scored.stderr and "Traceback" not in scored.stderr
    listed = biotwin("models", "verify", "--data-dir", str(store))
    assert listed.returncode == 1 and "breaks at seq 2" in listed.stdout


class _Marker:
    """Unpickling this creates a file: what a crafted model.joblib could do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("swap", ["zeroed-calibrator", "crafted-pickle"])
def test_a_swapped_model_file_is_refused_before_unpickling(store, registry, tmp_path, swap):
    version = registry.register({"calibrator": [0.1, 0.9]}, META)
    registry.approve(
        version,
        user="qa",
        password=PASSWORDS["qa"],
        reason="validation reviewed",
        users_file=store / "users.toml",
    )
    assert registry.load_approved("deviation")[0] == {"calibrator": [0.1, 0.9]}
    marker = tmp_path / "ran-code"
    target = registry.root / version / "model.skops"
    if swap == "zeroed-calibrator":
        dump_model({"calibrator": [0.0, 0.0]}, target)
    else:
        target.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(RegistryError, match=r"model.skops: .* is not the registered file"):
        registry.load_approved("deviation")
    assert not marker.exists()
    checked = biotwin("models", "verify", "--data-dir", str(store))
    assert checked.returncode == 1 and "is not the registered file" in checked.stdout
    assert not marker.exists()


def test_a_model_file_is_data_only_types_of_a_model_are_built(tmp_path):
    """Outside the registry too (`deviation predict --model DIR`): a file naming any type
    outside the allow-list is refused before anything of it is built; a pickle is not a
    model file; a model in the old pickle format is not loaded."""
    marker = tmp_path / "ran-code"
    meta = json.dumps({"family": "deviation"})
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    (crafted / "meta.json").write_text(meta)
    (crafted / "model.skops").write_bytes(skops.io.dumps({"x": _Built(str(marker))}))
    with pytest.raises(
        RegistryError, match=r"names types a biotwin model never holds \(.*_Built\)"
    ):
        load_model(crafted)
    (crafted / "model.skops").write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(RegistryError, match="is not a model file in the skops format"):
        load_model(crafted)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "meta.json").write_text(meta)
    (legacy / "model.joblib").write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(RegistryError, match=r"old pickle format \(model.joblib\)"):
        load_model(legacy)
    assert not marker.exists()


class _Built:
    """Building this (skops sets its state) creates a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __setstate__(self, state):
        Path(state["path"]).write_text("ran")


def test_the_same_model_gives_the_same_file_bytes(tmp_path):
    from sklearn.linear_model import LogisticRegression

    def fitted():  # a new object each time: other memory addresses, same content
        X = np.array([[0.0], [1.0], [2.0], [3.0]])
        return {"lr": LogisticRegression().fit(X, [0, 0, 1, 1]), "grid": [0.25, 0.5]}

    first = fitted()
    a = dump_model(first, tmp_path / "a.skops").read_bytes()
    time.sleep(2.1)  # zip entries would carry another time
    b = dump_model(fitted(), tmp_path / "b.skops").read_bytes()
    assert a == b
    assert load_model_bytes(b, "b.skops")["grid"] == [0.25, 0.5]
