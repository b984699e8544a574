"""The model registry: every trained model versioned, traceable, and approved by a person.

Layout under ``root`` (``DATA_DIR/models``)::

    registry.jsonl              append-only, signed and anchored events (registered,
                                approved, approval_refused, retired, adopted)
    <version>/model.skops       the fitted model, as data (skops format, no pickle:
                                :mod:`quality.artefact`)
    <version>/meta.json         family, parameters, features, training-data fingerprint,
                                validation metrics, intended use, drift reference
    <version>/card.md           the model card, generated from meta.json

A version id is ``<family>-<model sha256[:12]>``: the same data and seed give the same model,
hence the same version, and registering it again changes nothing. Promotion to *approved* is
an explicit step by a user with the ``qa`` role who re-enters a password; scoring loads the
approved version of a family and refuses to run without one. Files are written to a
temporary directory and renamed into place.

Integrity (docs/records.md): every event is signed with the records key kept outside the
data dir and anchored next to it (:mod:`connectors.signed_log`); every read verifies the
log, and :meth:`Registry.approved` / :meth:`Registry.load_approved` refuse while it does not
verify. The ``registered`` event holds the SHA-256 of model.skops and meta.json; before
every load the files are read once, hashed and compared with it, and only bytes that match
are loaded (and then only the allow-listed types of :mod:`quality.artefact`), so a swapped
or crafted model file is refused without running it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from connectors.security import SignInError, authenticate
from connectors.signed_log import LogState, RecordsError, SignedLog, Verification
from quality.artefact import LEGACY_FILE, MODEL_FILE, dump_model, load_model_bytes
from quality.errors import RegistryError

__all__ = ["Registry", "load_model", "markdown_table", "model_card", "save_model"]

logger = logging.getLogger(__name__)

APPROVER_ROLE = "qa"
META_FILE = "meta.json"


def save_model(directory: str | os.PathLike, model, meta: dict) -> Path:
    """Write model.skops, meta.json and card.md into ``directory`` atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        dump_model(model, tmp / MODEL_FILE)
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
    path = directory / MODEL_FILE
    if not path.exists() and (directory / LEGACY_FILE).exists():
        raise RegistryError(
            f"model: {str(directory)!r} holds a model in the old pickle format ({LEGACY_FILE}), "
            "which biotwin no longer loads (a pickle can run code); fit it again"
        )
    if not path.exists():
        raise RegistryError(f"model: no model in {str(directory)!r} ({MODEL_FILE} is missing)")
    meta = json.loads((directory / META_FILE).read_text())
    return load_model_bytes(path.read_bytes(), str(path)), meta


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
    body = {k: v for k, v in record.items() if k not in ("hash", "mac")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class Registry:
    """Versions, approvals and loading of models under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.log = self.root / "registry.jsonl"
        self._signed = SignedLog(
            self.log, required=("event", "version"), digest=_digest, kind="event"
        )

    # ------------------------------------------------------------------ events
    def state(self) -> LogState:
        """One verified read: every readable event, the verified prefix, the verification."""
        return self._signed.read()

    def events(self) -> list[dict]:
        """The verified events, oldest first (those before the first break of the chain)."""
        return self.state().verified

    def verification(self) -> Verification:
        """Verify the chain, the signatures and the anchor of the event log."""
        return self.state().verification

    def _append(self, **fields) -> dict:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        try:
            return self._signed.append(fields, now=now)
        except RecordsError as exc:
            raise RegistryError(f"registry: not recorded: {exc}") from exc

    def verify(self) -> tuple[bool, str]:
        """Check the event log: (ok, problem in one line, '' when ok)."""
        check = self.verification()
        return check.ok, "" if check.ok else check.summary()

    def _intact(self) -> list[dict]:
        """The events, when the whole log verifies.

        Raises
        ------
        RegistryError
            Naming the seq of the first event that breaks the chain and why.
        """
        state = self.state()
        check = state.verification
        if not check.intact:
            raise RegistryError(
                f"registry: {self.log} does not verify at seq {check.first_bad}: "
                f"{check.problem}; no approval from it is used (`biotwin models verify`)"
            )
        return state.verified

    def adopt(self, *, user: str, reason: str) -> dict:
        """Vouch for the event log as it is (legacy events, or after an investigation): a
        signed ``adopted`` event holding the SHA-256 of every byte before it.

        Raises
        ------
        RegistryError
            Empty reason, or no usable signing key (nothing recorded).
        """
        if not reason.strip():
            raise RegistryError("reason: an adoption needs a reason; got ''")
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        fields = {"event": "adopted", "version": None, "family": None, "user": user}
        try:
            return self._signed.append(dict(fields, reason=reason), now=now, adopt=True)
        except RecordsError as exc:
            raise RegistryError(f"registry: not recorded: {exc}") from exc

    # ------------------------------------------------------------------ versions
    def register(self, model, meta: dict) -> str:
        """Store a model; returns its version (existing one if the same model is there).

        The ``registered`` event holds the SHA-256 of model.skops and meta.json as written.

        Raises
        ------
        RegistryError
            Without a usable signing key (nothing written).
        """
        family = meta["family"]
        version = f"{family}-{meta['model_sha256'][:12]}"
        target = self.root / version
        if (target / MODEL_FILE).exists() and self._registered(version, self.events()):
            logger.info("model %s already registered", version)
            return version
        try:
            self._signed.key()  # no key, nothing written
        except RecordsError as exc:
            raise RegistryError(f"registry: not registered: {exc}") from exc
        meta = dict(meta, version=version)
        save_model(target, model, meta)
        self._append(
            event="registered",
            family=family,
            version=version,
            user=meta.get("user"),
            model_file_sha256=hashlib.sha256((target / MODEL_FILE).read_bytes()).hexdigest(),
            meta_file_sha256=hashlib.sha256((target / META_FILE).read_bytes()).hexdigest(),
        )
        return version

    @staticmethod
    def _registered(version: str, events: list[dict]) -> dict | None:
        """The newest ``registered`` event of ``version`` that holds file fingerprints."""
        hits = [
            ev
            for ev in events
            if ev.get("event") == "registered"
            and ev.get("version") == version
            and ev.get("model_file_sha256")
        ]
        return hits[-1] if hits else None

    def checked_files(self, version: str, events: list[dict] | None = None) -> tuple[bytes, bytes]:
        """The bytes of model.skops and meta.json of ``version``, read once and matched
        against the fingerprints of its registered event (nothing is loaded here).

        ``events``: the verified events to take the fingerprints from (default: the log,
        which must verify).

        Raises
        ------
        RegistryError
            A log that does not verify, no registered event with fingerprints, a file
            missing, or bytes that differ.
        """
        event = self._registered(version, self._intact() if events is None else events)
        if event is None:
            raise RegistryError(
                f"version: {version!r} has no signed registration with file fingerprints in "
                f"{self.log}; register it again (`biotwin train`)"
            )
        out = []
        for name, field in ((MODEL_FILE, "model_file_sha256"), (META_FILE, "meta_file_sha256")):
            path = self.root / version / name
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise RegistryError(f"{name}: cannot read {path}: {exc.strerror}") from exc
            sha = hashlib.sha256(data).hexdigest()
            if sha != event[field]:
                raise RegistryError(
                    f"{name}: {path} is not the registered file (sha256 {sha[:16]}..., "
                    f"registered {event[field][:16]}... at seq {event['seq']}); refused, not loaded"
                )
            out.append(data)
        return out[0], out[1]

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
        self.checked_files(version, self._intact())
        problem = None
        try:  # the sign-in rules: recorded, locked out after failures, disabled users refused
            entry = authenticate(Path(users_file), user, password, source="approval")
        except SignInError as exc:
            entry, problem = None, str(exc).removeprefix("sign-in refused: ")
        if entry is not None and APPROVER_ROLE not in entry.get("roles", []):
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
        """The approved version of ``family``, if any.

        Raises
        ------
        RegistryError
            If the event log does not verify (naming the seq and why).
        """
        self._intact()
        table = self.versions()
        if table.empty:
            return None
        hit = table[(table["family"] == family) & (table["status"] == "approved")]
        return None if hit.empty else str(hit["version"].iloc[-1])

    def load(self, version: str):
        """Model and metadata of a version, after its files matched their registered
        fingerprints (checked before anything is loaded).

        Raises
        ------
        RegistryError
            Unknown version, a log that does not verify, or files that differ.
        """
        self.meta(version)
        model_bytes, meta_bytes = self.checked_files(version, self._intact())
        where = str(self.root / version / MODEL_FILE)
        return load_model_bytes(model_bytes, where), json.loads(meta_bytes)

    def load_approved(self, family: str):
        """Model and metadata of the approved version of ``family``.

        Raises
        ------
        RegistryError
            If no version of the family is approved, the event log does not verify, or the
            approved version's files differ from their registered fingerprints.
        """
        version = self.approved(family)
        if version is None:
            raise RegistryError(
                f"{family}: no approved model in {self.root}; train one (`biotwin train`) and "
                f"approve it (`biotwin models approve VERSION --user QA_USER`)"
            )
        return self.load(version)
