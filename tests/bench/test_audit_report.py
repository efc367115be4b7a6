"""Issue 19, item 3: the audits section of the report (tables, figures, per-method verdict) from records only."""

from __future__ import annotations

import pytest

from unlearnkit.bench._testing import fake_records
from unlearnkit.bench.audit_report import verdict
from unlearnkit.bench.records import append_record
from unlearnkit.bench.report import aggregate, build_report, markdown_tables
from unlearnkit.bench.stats import summarize

ROC = {"fpr": [0.0, 0.001, 0.01, 0.1, 1.0], "tpr": [0.0, 0.01, 0.05, 0.3, 1.0]}


def _with_audits(recs):
    """scrub: output gap within the floor but CKA below the original's (must DISAGREE); fake_any: a large gap,
    representations like the retrained model's."""
    for r in recs:
        label = r["bench"]["label"]
        m = r["models"]
        m["original"]["metrics"].update(cka_to_retrained_forget=0.71, probe_accuracy_test_forgotten_classes=60.0)
        m["retrained"]["metrics"].update(probe_accuracy_test_forgotten_classes=40.0, probe_accuracy_test=90.0)
        m["original"]["metrics"]["probe_accuracy_test"] = 91.0
        for role in m:
            m[role]["metrics"]["mia_auc_forget_loss"] = 0.6
        u = m["unlearned"]["metrics"]
        if label == "scrub":
            r["gaps_to_retrained"]["avg_gap_to_retrained"] = 0.51
            r["noise_floor_avg_gap"] = 0.3
            u.update(cka_to_retrained_forget=0.39, probe_accuracy_test_forgotten_classes=43.2, probe_accuracy_test=90.5)
        else:
            r["gaps_to_retrained"]["avg_gap_to_retrained"] = 5.0
            u.update(cka_to_retrained_forget=0.9, probe_accuracy_test_forgotten_classes=40.0, probe_accuracy_test=90.0)
        r["extras"] = {
            "mia_population": {"roc": dict.fromkeys(m, ROC)},
            "cka": {},
            "oracle_margins": {
                "forget": {
                    "abs_z_mean": 1.0,
                    "null_abs_z_mean": 0.8,
                    "hist_edges": [0.0, 1.0, 2.0],
                    "hist_model": [5, 3, 2],
                    "hist_null": [6, 3, 1],
                }
            },
            "competition_lite": {"competition_forget_quality": 0.2, "eps_per_example": [0.1, 0.7, 2.0, 50.0]},
        }
        u["klom_abs_z_mean_forget"] = 1.0
    return recs


def _stat(v):
    return summarize([v])


@pytest.mark.parametrize(
    ("values", "expect"),
    [
        (
            {
                "avg_gap_to_retrained": 0.51,
                "noise_floor_avg_gap": 0.3,
                "cka_to_retrained_forget": 0.39,
                "cka_original": 0.71,
            },
            "DISAGREE",
        ),
        ({"avg_gap_to_retrained": 0.5, "noise_floor_avg_gap": 0.3, "probe_advantage": 3.2}, "DISAGREE"),
        ({"avg_gap_to_retrained": 0.5, "noise_floor_avg_gap": 0.3, "probe_advantage": 0.9}, "agree: passes"),
        ({"avg_gap_to_retrained": 0.9, "noise_floor_avg_gap": 0.3, "probe_advantage": 3.2}, "agree: fails"),
        ({"avg_gap_to_retrained": 0.9, "cka_to_retrained_forget": 0.8, "cka_original": 0.7}, "output level fails"),
        ({"avg_gap_to_retrained": 0.1}, "no representation audits"),
    ],
)
def test_verdict_rule(values, expect):
    assert verdict({k: _stat(v) for k, v in values.items()}).startswith(expect)


def test_audit_section_numbers_and_verdicts():
    sc = aggregate(_with_audits(fake_records(forgets=("class:0",))))[0]
    assert sc.audits is not None
    rows = {r.label: r for r in sc.audits.rows}
    scrub = rows["scrub"]
    assert scrub.values["cka_to_retrained_forget"]["mean"] == pytest.approx(0.39)
    assert scrub.values["cka_original"]["mean"] == pytest.approx(0.71)
    assert scrub.values["probe_advantage"]["mean"] == pytest.approx(3.2)
    assert scrub.verdict.startswith("DISAGREE") and "0.39 < the original's 0.71" in scrub.verdict
    assert "+3.2 pp" in scrub.verdict
    assert rows["fake_any"].verdict.startswith("output level fails")
    assert scrub.klom_hist == [15, 9, 6] and len(scrub.eps) == 12  # summed / pooled over 3 seeds
    assert scrub.roc == ROC


def test_records_without_audits_have_no_section():
    sc = aggregate(fake_records(forgets=("class:0",)))[0]
    assert sc.audits is None
    assert "### Audits" not in markdown_tables([sc])


def test_report_renders_the_audits_section_with_verdicts(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("jinja2")
    d = tmp_path / "bench"
    d.mkdir()
    for r in _with_audits(fake_records()):
        append_record(d / "records.jsonl", r)
    out = build_report(d)
    md = (out / "tables.md").read_text()
    assert md.count("### Audits") == 2
    assert "| scrub |" in md and "DISAGREE: output level passes" in md and "Verdict rule" in md
    html = (out / "report.html").read_text()
    assert html.count('<section class="audits"') == 2
    assert 'class="verdict disagree"' in html and "Membership inference: ROC on log-log axes" in html
    assert "Per-example scores" in html
    assert (out / "plots" / "synthetic_small_cnn_class_0_audit_roc.png").stat().st_size > 1000
