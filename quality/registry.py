"""The model registry: every trained model versioned, traceable, and approved by a person.

Layout under ``root`` (``DATA_DIR/models``)::

    registry.jsonl              append-only, hash-chained events (registered, approved, retired)
    <version>/model.joblib      the fitted model object
    <version>/meta.json         family, parameters, features, training-data fingerprint,
                                validation metrics, intended use, drift reference
    <version>/card.md           the model card, generated from meta.json

A version id is ``<family>-<model sha256[:12]>``: the same data and seed give the same model,
hence the same version, and registering it again changes nothing. Promotion to *approved* is
an explicit step by a user with the ``qa`` role who re-enters a password; scoring loads the
approved version of a family and refuses to run without one. Files are written to a
temporary directory and renamed into place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import joblib
import pandas as pd

from connectors.security import load_users, verify_password
from quality.errors import RegistryError

__all__ = ["Registry", "load_model", "markdown_table", "model_card", "save_model"]

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
APPROVER_ROLE = "qa"


def save_model(directory: str | os.PathLike, model, meta: dict) -> Path:
    """Write model.joblib, meta.json and card.md into ``directory`` atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        joblib.dump(model, tmp / "model.joblib")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        (tmp / "card.md").write_text(model_card(meta))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_model(directory: str | os.PathLike):
    """The model and its metadata from a directory written by :func:`save_model`."""
    directory = Path(directory)
    if not (directory / "model.joblib").exists():
        raise RegistryError(f"model: no model in {str(directory)!r} (model.joblib is missing)")
    meta = json.loads((directory / "meta.json").read_text())
    return joblib.load(directory / "model.joblib"), meta


def model_card(meta: dict) -> str:
    """A Markdown model card from the metadata (EU GMP draft Annex 22 headings)."""
    m = meta.get("metrics", {})
    lines = [
        f"# Model card: {meta.get('version', meta.get('family'))}",
        "",
        f"- Family: {meta.get('family')}",
        f"- Created: {meta.get('created')}",
        f"- Model sha256: `{meta.get('model_sha256')}`",
        f"- Seed: {meta.get('seed')}; libraries: {meta.get('libraries')}",
        "",
        "## Intended use",
        meta.get("intended_use", ""),
        "",
        "## Limitations",
        meta.get("limitations", ""),
        "",
        "## Training data",
    ]
    for k, v in (meta.get("training_data") or {}).items():
        lines.append(f"- {k}: {v}")
    split = str((meta.get("training_data") or {}).get("split", ""))
    if split.startswith("none"):
        lines += ["", "## Validation (cross-validated: grouped folds of the training data)", ""]
    else:
        lines += ["", "## Validation (held-out data, never used in training)", ""]
    tables = {k: v for k, v in m.items() if isinstance(v, list)}
    for k, v in (m.get("headline") or {}).items():
        lines.append(f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}")
    for k, v in m.items():
        if not isinstance(v, list | dict):
            lines.append(f"- {k}: {v}")
    for name, rows in tables.items():
        if rows:
            lines += ["", f"### {name}", "", markdown_table(rows)]
    sel = meta.get("selection")
    if sel:
        from quality.selection import Selection

        lines += ["", "## Model selection (grouped cross-validation)", "", "```"]
        lines += Selection.lines_of(sel)
        lines += ["```"]
    cal = meta.get("calibration")
    if cal:
        lines += ["", "## Calibration", ""]
        lines.append(f"- chosen: {cal.get('chosen')} ({cal.get('rule')})")
        for method, v in (cal.get("methods") or {}).items():
            refused = f"; refused: {v['refused']}" if v.get("refused") else ""
            lines.append(
                f"- {method}: CV log loss {v['cv_log_loss']}, Brier {v['cv_brier']}{refused}"
            )
        if cal.get("no_evidence_at_progress"):
            lines.append(
                "- no ranking evidence in cross-validation at progress "
                f"{cal['no_evidence_at_progress']}: probabilities there stay near the base rate"
            )
    lines += [
        "",
        "## Inputs",
        f"{len(meta.get('features', []))} features; parameters: `{meta.get('params')}`",
        "",
        "## Explanations and confidence",
        "Every prediction carries its top contributions in words (SHAP contributions of the "
        "LightGBM member, per-tag contributions of the MSPC / logistic members), a calibrated "
        "probability, conformal intervals for regressions, and "
        "a low-confidence flag naming suspect sensors.",
        "",
        "## Human oversight",
        "A person decides. Approval for use is an e-signed step recorded in registry.jsonl.",
    ]
    return "\n".join(lines) + "\n"


def markdown_table(rows: list[dict]) -> str:
    """A list of dicts as a Markdown table (numbers to 3 decimals)."""
    if not rows:
        return ""
    cols = list(rows[0])

    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def _digest(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class Registry:
    """Versions, approvals and loading of models under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.log = self.root / "registry.jsonl"

    # ------------------------------------------------------------------ events
    def events(self) -> list[dict]:
        """All registry events, oldest first."""
        if not self.log.exists():
            return []
        with open(self.log, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def _append(self, **fields) -> dict:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                existing = self.events()
                record = dict(
                    fields,
                    seq=len(existing) + 1,
                    time=datetime.now(UTC).isoformat(timespec="milliseconds"),
                    prev_hash=existing[-1]["hash"] if existing else GENESIS,
                )
                record["hash"] = _digest(record)
                fh.write(json.dumps(record, default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return record

    def verify(self) -> tuple[bool, str]:
        """Check the hash chain of the event log: (ok, problem)."""
        prev = GENESIS
        for n, rec in enumerate(self.events(), start=1):
            if rec.get("prev_hash") != prev or _digest(rec) != rec.get("hash"):
                return False, f"event {n} was altered or removed"
            prev = rec["hash"]
        return True, ""

    # ------------------------------------------------------------------ versions
    def register(self, model, meta: dict) -> str:
        """Store a model; returns its version (existing one if the same model is there)."""
        family = meta["family"]
        version = f"{family}-{meta['model_sha256'][:12]}"
        target = self.root / version
        if (target / "model.joblib").exists():
            logger.info("model %s already registered", version)
            return version
        meta = dict(meta, version=version)
        save_model(target, model, meta)
        self._append(event="registered", family=family, version=version, user=meta.get("user"))
        return version

    def versions(self) -> pd.DataFrame:
        """One row per version: family, version, created, status, headline metrics."""
        status: dict[str, str] = {}
        approved_by: dict[str, str] = {}
        for ev in self.events():
            if ev["event"] == "registered":
                status.setdefault(ev["version"], "registered")
            elif ev["event"] == "approved":
                for v, s in status.items():
                    if s == "approved" and v.startswith(ev["family"] + "-"):
                        status[v] = "superseded"
                status[ev["version"]] = "approved"
                approved_by[ev["version"]] = f"{ev['user']} ({ev['time']})"
            elif ev["event"] == "retired":
                status[ev["version"]] = "retired"
        rows = []
        for version, st in status.items():
            meta_file = self.root / version / "meta.json"
            meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
            headline = meta.get("metrics", {}).get("headline", {})
            rows.append(
                dict(
                    family=meta.get("family"),
                    version=version,
                    created=meta.get("created"),
                    status=st,
                    approved_by=approved_by.get(version, ""),
                    **headline,
                )
            )
        return pd.DataFrame(rows)

    def meta(self, version: str) -> dict:
        """Metadata of a version."""
        path = self.root / version / "meta.json"
        if not path.exists():
            raise RegistryError(f"version: {version!r} is not in the registry at {self.root}")
        return json.loads(path.read_text())

    def approve(
        self, version: str, *, user: str, password: str, reason: str, users_file: Path
    ) -> dict:
        """Promote ``version`` to approved (its family's previous approval is superseded).

        Raises
        ------
        RegistryError
            Unknown version, empty reason, wrong password or a user without the qa role
            (refusals are recorded too).
        """
        meta = self.meta(version)
        if not reason.strip():
            raise RegistryError("reason: an approval needs a reason; got ''")
        entry = load_users(Path(users_file)).get(user)
        problem = None
        if entry is None or not verify_password(password, entry.get("password", "")):
            problem = "wrong user name or password"
        elif APPROVER_ROLE not in entry.get("roles", []):
            problem = f"user {user!r} lacks the {APPROVER_ROLE!r} role"
        if problem:
            self._append(
                event="approval_refused",
                family=meta["family"],
                version=version,
                user=user,
                reason=problem,
            )
            raise RegistryError(f"approval refused: {problem}")
        return self._append(
            event="approved",
            family=meta["family"],
            version=version,
            user=user,
            reason=reason,
            meaning="I reviewed the validation evidence; the model is fit for its intended use",
        )

    def approved(self, family: str) -> str | None:
        """The approved version of ``family``, if any."""
        table = self.versions()
        if table.empty:
            return None
        hit = table[(table["family"] == family) & (table["status"] == "approved")]
        return None if hit.empty else str(hit["version"].iloc[-1])

    def load(self, version: str):
        """Model and metadata of a version."""
        self.meta(version)
        return load_model(self.root / version)

    def load_approved(self, family: str):
        """Model and metadata of the approved version of ``family``.

        Raises
        ------
        RegistryError
            If no version of the family is approved.
        """
        version = self.approved(family)
        if version is None:
            raise RegistryError(
                f"{family}: no approved model in {self.root}; train one (`biotwin train`) and "
                f"approve it (`biotwin models approve VERSION --user QA_USER`)"
            )
        return self.load(version)
