"""Run the product on every external data set, as a customer would, next to plain baselines.

For each data set: write its tables as Parquet, call ``biotwin deviation fit/predict`` (batch
sets, at progress 0.25, 0.5, 0.75 and 1.0) or ``biotwin maintenance fit/predict``
(degradation sets) as subprocesses, fit the baselines of ``baselines.py`` on the same training
split, and report ROC AUC, Brier and the constant-rate Brier per progress, or the RUL RMSE at
each test asset's last row. A product failure is reported in the table, never raised: the
command exits 0 whatever the figures say.

Usage: ``python benchmarks/external/run.py [--size full|small] [--only NAME ...] [--seed 0]
[--out DIR] [--json FILE]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from _machine import machine  # noqa: E402

from benchmarks.external import baselines  # noqa: E402
from benchmarks.external.datasets import ALL, BATCH  # noqa: E402

PROGRESS = baselines.PROGRESS
BASELINES = ("lightgbm", "logistic", "envelope")


def biotwin_exe() -> str:
    """The ``biotwin`` script next to this interpreter, else the one on PATH."""
    local = Path(sys.executable).parent / "biotwin"
    if local.exists():
        return str(local)
    found = shutil.which("biotwin")
    if found is None:
        raise FileNotFoundError("biotwin: not next to the interpreter and not on PATH")
    return found


def cli(args: list[str], cwd: Path, timeout: float) -> dict:
    """Run ``biotwin ARGS``; ok, seconds and the tail of its output (never raises)."""
    t0 = time.perf_counter()
    try:
        cmd = [biotwin_exe(), *args]
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        ok, out = done.returncode == 0, (done.stdout + done.stderr)
        code = done.returncode
    except subprocess.TimeoutExpired:
        ok, out, code = False, f"timed out after {timeout:.0f} s", None
    except OSError as exc:
        ok, out, code = False, f"could not start: {exc}", None
    tail = "\n".join(out.strip().splitlines()[-12:])
    return {
        "ok": ok,
        "returncode": code,
        "seconds": time.perf_counter() - t0,
        "tail": tail,
        "command": " ".join(["biotwin", *args]),
    }


def selection(model_dir: Path) -> dict | None:
    """The model selection recorded in ``meta.json``, if the product writes one."""
    try:
        meta = json.loads((model_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    sel = meta.get("selection")
    if not isinstance(sel, dict):
        return None
    chosen = sel.get("chosen")
    early = (sel.get("early") or {}).get("chosen")  # before 50 % progress, if another one
    cand = next((c for c in sel.get("candidates", []) if c.get("name") == chosen), {})
    return {
        "metric": sel.get("metric"),
        "chosen": chosen,
        "cv_mean": cand.get("cv_mean"),
        "cv_sd": cand.get("cv_sd"),
        "warnings": sel.get("warnings", []),
        "early": None if early == chosen else early,
    }


# ----------------------------------------------------------------------------- batch


def run_batch(name: str, data: dict, seed: int, work: Path, timeout: float) -> dict:
    """Product and baselines on one batch data set; every figure in a dict."""
    work.mkdir(parents=True, exist_ok=True)
    files = {k: work / f"{k}.parquet" for k in ("series_train", "outcomes_train", "series_test")}
    for key, path in files.items():
        data[key].to_parquet(path, index=False)
    y_train = data["outcomes_train"]["label"].to_numpy()
    test = data["outcomes_test"]
    y = test["label"].to_numpy()
    rate = float(y_train.mean())
    opts = dict(zip(data["fit_args"][::2], data["fit_args"][1::2], strict=False))
    bin_h = float(opts.get("--bin-h", 1.0))
    result = {
        "kind": "batch",
        "description": data["description"],
        "n_train": len(y_train),
        "positives_train": int(y_train.sum()),
        "n_test": len(y),
        "positives_test": int(y.sum()),
        "tags": int(data["series_train"]["tag"].nunique()),
        "rows": len(data["series_train"]) + len(data["series_test"]),
        "nominal_h": baselines.nominal_duration_h(data["series_train"]),
        "bin_h": bin_h,
        "constant_brier": baselines.brier(y, np.full(len(y), rate)),
        "by_progress": {},
    }
    t0 = time.perf_counter()
    scores = baselines.batch_baselines(data, bin_h=bin_h, seed=seed)
    result["baseline_seconds"] = time.perf_counter() - t0
    product = _batch_product(files, data["fit_args"], test, seed, work, timeout)
    result["product"] = {k: v for k, v in product.items() if k != "scores"}
    for p in PROGRESS:
        row = {}
        for b in BASELINES:
            row[f"{b}_auc"] = baselines.roc_auc(y, scores[b][p])
            row[f"{b}_brier"] = baselines.brier(y, scores[b][p]) if b != "envelope" else None
        s = product.get("scores", {}).get(p)
        row["product_auc"] = None if s is None else baselines.roc_auc(y[s[0]], s[1])
        row["product_brier"] = None if s is None else baselines.brier(y[s[0]], s[1])
        row["product_scored"] = 0 if s is None else int(s[0].sum())
        result["by_progress"][str(p)] = row
    return result


def _batch_product(files, fit_args, test, seed, work, timeout) -> dict:
    model = work / "deviation_model"
    fit = cli(
        [
            "deviation",
            "fit",
            "--series",
            str(files["series_train"]),
            "--outcomes",
            str(files["outcomes_train"]),
            *fit_args,
            "--model",
            str(model),
            "--seed",
            str(seed),
        ],
        work,
        timeout,
    )
    out = {"fit": fit, "predict": {}, "scores": {}}
    if not fit["ok"]:
        return out
    out["selection"] = selection(model)
    ids = test["batch_id"].astype(str).to_numpy()
    for p in PROGRESS:
        pred_path = work / f"pred_{p}.parquet"
        run = cli(
            [
                "deviation",
                "predict",
                "--model",
                str(model),
                "--series",
                str(files["series_test"]),
                "--progress",
                str(p),
                "--out",
                str(pred_path),
            ],
            work,
            timeout,
        )
        out["predict"][str(p)] = run
        if not run["ok"]:
            continue
        try:
            pred = pd.read_parquet(pred_path)
            p_dev = pred.assign(batch_id=pred["batch_id"].astype(str)).set_index("batch_id")
            values = p_dev["p_deviation"].reindex(ids).to_numpy(dtype=float)
        except (OSError, KeyError, ValueError) as exc:
            run.update(ok=False, tail=f"unreadable prediction: {exc}")
            continue
        scored = np.isfinite(values)
        out["scores"][p] = (scored, values[scored])
    return out


# ----------------------------------------------------------------------------- degradation


def run_degradation(name: str, data: dict, seed: int, work: Path, timeout: float) -> dict:
    """Product and baseline RUL RMSE on one degradation data set."""
    work.mkdir(parents=True, exist_ok=True)
    train_path, test_path = work / "runs_train.parquet", work / "runs_test.parquet"
    data["runs_train"].to_parquet(train_path, index=False)
    data["runs_test"].to_parquet(test_path, index=False)
    cap = data["rul_cap"]
    truth = data["truth_test"].assign(asset=lambda f: f["asset"].astype(str)).set_index("asset")
    truth = truth["rul"].clip(upper=cap) if cap is not None else truth["rul"]
    opts = dict(zip(data["fit_args"][::2], data["fit_args"][1::2], strict=False))
    result = {
        "kind": "degradation",
        "description": data["description"],
        "train_assets": int(data["runs_train"][opts["--asset-col"]].nunique()),
        "train_rows": len(data["runs_train"]),
        "test_assets": len(truth),
        "rul_cap": cap,
        "setting_cols": data["setting_cols"],
    }
    t0 = time.perf_counter()
    base = baselines.degradation_baseline(data, seed=seed)
    result["baseline_seconds"] = time.perf_counter() - t0
    result["baseline_rmse"] = _rmse(truth, base)
    result["constant_rmse"] = _constant_rmse(data, truth)
    model = work / "maintenance_model"
    args = ["maintenance", "fit", "--runs", str(train_path), *data["fit_args"]]
    if cap is not None:
        args += ["--rul-cap", f"{cap:g}"]
    if data["setting_cols"]:
        args += ["--setting-cols", ",".join(data["setting_cols"])]
    fit = cli([*args, "--model", str(model), "--seed", str(seed)], work, timeout)
    result["product"] = {"fit": fit}
    result["product_rmse"] = None
    if fit["ok"]:
        result["product"]["selection"] = selection(model)
        pred_path = work / "pred.parquet"
        run = cli(
            [
                "maintenance",
                "predict",
                "--model",
                str(model),
                "--runs",
                str(test_path),
                "--out",
                str(pred_path),
            ],
            work,
            timeout,
        )
        result["product"]["predict"] = {"test": run}
        if run["ok"]:
            try:
                pred = pd.read_parquet(pred_path)
                result["product_rmse"] = _rmse(truth, pred)
            except (OSError, KeyError, ValueError) as exc:
                run.update(ok=False, tail=f"unreadable prediction: {exc}")
    return result


def _rmse(truth: pd.Series, pred: pd.DataFrame) -> dict:
    got = pred.assign(asset=pred["asset"].astype(str)).set_index("asset")["rul"]
    got = got.reindex(truth.index).to_numpy(dtype=float)
    ok = np.isfinite(got)
    rmse = float(np.sqrt(np.mean((got[ok] - truth.to_numpy()[ok]) ** 2))) if ok.any() else None
    return {"rmse": rmse, "scored": int(ok.sum())}


def _constant_rmse(data: dict, truth: pd.Series) -> float:
    """RMSE of predicting the mean capped RUL of the training runs' rows (failed runs)."""
    asset_col, time_col, failure_col = baselines._columns(data["fit_args"])
    runs = data["runs_train"].sort_values([asset_col, time_col])
    t = baselines._time_units(runs[time_col])
    target, known = baselines._targets(runs, asset_col, t, failure_col, data["rul_cap"])
    guess = float(np.mean(target[known]))
    return float(np.sqrt(np.mean((truth.to_numpy() - guess) ** 2)))


# ----------------------------------------------------------------------------- report


def _f(v, digits=3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def batch_table(name: str, r: dict) -> str:
    """A Markdown table of one batch data set."""
    fit = r["product"]["fit"]
    lines = [
        f"### {name}",
        "",
        r["description"],
        "",
        f"train {r['n_train']} batches ({r['positives_train']} faulted), test {r['n_test']} "
        f"({r['positives_test']} faulted), {r['tags']} tags, {r['rows']:,} rows, nominal "
        f"{r['nominal_h']:.1f} h, bin {r['bin_h']:g} h; constant-rate Brier "
        f"{_f(r['constant_brier'])}; product fit {fit['seconds']:.0f} s, baselines "
        f"{r['baseline_seconds']:.0f} s",
        "",
        "| progress | product AUC | LightGBM AUC | logistic AUC | envelope AUC | product Brier "
        "| LightGBM Brier | logistic Brier | constant Brier |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p, row in r["by_progress"].items():
        prod_auc = _f(row["product_auc"]) if fit["ok"] else "error"
        prod_brier = _f(row["product_brier"]) if fit["ok"] else "error"
        pred = r["product"]["predict"].get(p)
        if fit["ok"] and pred is not None and not pred["ok"]:
            prod_auc = prod_brier = "error"
        lines.append(
            f"| {float(p):.0%} | {prod_auc} | {_f(row['lightgbm_auc'])} | "
            f"{_f(row['logistic_auc'])} | {_f(row['envelope_auc'])} | {prod_brier} | "
            f"{_f(row['lightgbm_brier'])} | {_f(row['logistic_brier'])} | "
            f"{_f(r['constant_brier'])} |"
        )
    lines += _product_notes(r["product"])
    return "\n".join(lines)


def degradation_table(name: str, r: dict) -> str:
    """A Markdown table of one degradation data set."""
    prod = r["product_rmse"]
    lines = [
        f"### {name}",
        "",
        r["description"],
        "",
        f"train {r['train_assets']} assets ({r['train_rows']:,} rows), test "
        f"{r['test_assets']} assets cut before failure; RUL cap {r['rul_cap']}; setting "
        f"columns {r['setting_cols'] or 'none'}",
        "",
        "| model | RUL RMSE at the last row | assets scored |",
        "|---|---|---|",
        f"| product | {_f(prod['rmse'], 1) if prod else 'error'} | "
        f"{prod['scored'] if prod else 0} |",
        f"| LightGBM windows | {_f(r['baseline_rmse']['rmse'], 1)} | "
        f"{r['baseline_rmse']['scored']} |",
        f"| constant (training mean) | {_f(r['constant_rmse'], 1)} | {r['test_assets']} |",
    ]
    lines += _product_notes(r["product"])
    return "\n".join(lines)


def _product_notes(product: dict) -> list[str]:
    notes = []
    sel = product.get("selection")
    if sel:
        notes.append(
            f"product selection: chosen {sel['chosen']} ({sel['metric']}: cv mean "
            f"{_f(sel['cv_mean'])}, sd {_f(sel['cv_sd'])})"
            + (f"; before 50 % progress: {sel['early']}" if sel.get("early") else "")
            + (f"; warnings: {'; '.join(sel['warnings'])}" if sel["warnings"] else "")
        )
    elif product["fit"]["ok"]:
        notes.append("product selection: meta.json has no 'selection'")
    for run in [product["fit"], *product.get("predict", {}).values()]:
        if not run["ok"]:
            notes.append(f"product error in `{run['command']}`:\n\n```\n{run['tail']}\n```")
            break
    return ["", *notes] if notes else []


def summary(results: dict) -> str:
    """One line per data set and figure: product against the best baseline, and the check
    of the suite's rule: the product at least as good as the best plain baseline within
    the chosen pipeline's cross-validated spread (its sd over folds), and a Brier score
    below the constant-rate predictor's."""
    lines = [
        "### summary",
        "",
        "| data set | figure | product | best baseline | baseline | CV sd | within spread "
        "| Brier below constant |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        sel = r["product"].get("selection") or {}
        sd = sel.get("cv_sd")
        ok = r["product"]["fit"]["ok"]
        if r["kind"] == "batch":
            for p, row in r["by_progress"].items():
                best = max(BASELINES, key=lambda b: row[f"{b}_auc"] or 0.0)
                prod, base = row["product_auc"], row[f"{best}_auc"]
                within = _verdict(ok and prod is not None, (prod or 0) - base, sd, 3)
                calibrated = (
                    ""
                    if not ok or row["product_brier"] is None
                    else ("yes" if row["product_brier"] < r["constant_brier"] else "no")
                )
                lines.append(
                    f"| {name} | AUC at {float(p):.0%} | {_f(prod) if ok else 'error'} | "
                    f"{_f(base)} | {best} | {_f(sd)} | {within} | {calibrated} |"
                )
        else:
            prod = r["product_rmse"]
            base = r["baseline_rmse"]["rmse"]
            within = _verdict(prod is not None, base - (prod or {}).get("rmse", 0.0), sd, 1)
            lines.append(
                f"| {name} | RUL RMSE | {_f(prod['rmse'], 1) if prod else 'error'} | "
                f"{_f(base, 1)} | LightGBM windows | {_f(sd, 1)} | {within} | |"
            )
    return "\n".join(lines)


def _verdict(scored: bool, lead: float, sd: float | None, digits: int) -> str:
    """ "yes" when the product leads or trails the baseline by at most ``sd``."""
    if not scored:
        return "error"
    if lead >= 0:
        return "yes (ahead)"
    if sd is not None and -lead <= sd:
        return f"yes ({-lead:.{digits}f} behind)"
    return f"**no** ({-lead:.{digits}f} behind)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("full", "small"), default="full")
    parser.add_argument("--only", nargs="+", choices=sorted(ALL), metavar="NAME")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="Keep data, models and predictions here.")
    parser.add_argument("--json", type=Path, help="Write every figure here (default: OUT/).")
    parser.add_argument("--timeout", type=float, default=3600.0, help="Per CLI call, seconds.")
    args = parser.parse_args(argv)
    names = args.only or list(ALL)
    print(machine(), flush=True)
    print(f"external suite: size {args.size}, seed {args.seed}, data sets {', '.join(names)}")
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="biotwin-external-")
        out = Path(tmp.name)
    else:
        out = args.out.resolve()
        out.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        for name in names:
            t0 = time.perf_counter()
            data = ALL[name].make(seed=args.seed, size=args.size)
            made = time.perf_counter() - t0
            print(
                f"\n{name}: generated in {made:.1f} s; running product and baselines...", flush=True
            )
            if name in BATCH:
                r = run_batch(name, data, args.seed, out / name, args.timeout)
                table = batch_table(name, r)
            else:
                r = run_degradation(name, data, args.seed, out / name, args.timeout)
                table = degradation_table(name, r)
            r["generate_seconds"] = made
            r["total_seconds"] = time.perf_counter() - t0
            results[name] = r
            print("\n" + table, flush=True)
        print("\n" + summary(results))
        report = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "size": args.size,
            "seed": args.seed,
            "progress": list(PROGRESS),
            "datasets": results,
        }
        json_path = args.json or (None if tmp else out / "results.json")
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report, indent=2, default=_plain))
            print(f"\nfigures written to {json_path}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
