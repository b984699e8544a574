"""`biotwin up`'s supervisor: failing services are reported in the terminal; readable metrics."""

from __future__ import annotations

from dashboard.cli import _metrics_table, _Service, console


def test_new_error_lines_of_a_service_log_are_reported_once(tmp_path):
    log = tmp_path / "scoring.log"
    log.write_text("2026-12-05 01:00:00 ERROR quality.live: an error of an earlier run\n")
    service = _Service("scoring", ["true"], {}, tmp_path)
    assert service.errors() == []  # earlier runs' errors are not news
    with open(log, "a") as f:
        f.write("02:29:49 scored 9 open batches\n")
        f.write("2026-12-05 02:30:00,1 ERROR quality.live: scoring failed: no approved model\n")
        f.write("Traceback (most recent call last):\n")
    found = service.errors()
    assert len(found) == 2 and "scoring failed: no approved model" in found[0]
    assert service.errors() == []


def test_model_metrics_print_as_a_table():
    table = _metrics_table("deviation", {"headline": {"auc_p50": 0.858954, "test_batches": 259}})
    with console.capture() as out:
        console.print(table)
    text = out.get()
    assert "ROC AUC at 50 % of the batch" in text and "0.859" in text and "{" not in text
