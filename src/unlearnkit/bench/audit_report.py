"""The audits section of a bench report: representation- and distribution-level evidence beside the output gaps.

Pure functions of the records (like the rest of `unlearnkit.bench.report`). Per scenario:

* a table per method: avg. gap and noise floor (output level) beside the population MIA (AUC and TPR at 1 % /
  0.1 % FPR of the loss attack, forget vs test), the linear probe and its advantage over the retrained model's
  features, CKA to the retrained model on the forget set with the original's CKA for reference, the
  oracle-margin score (mean |z| against K oracles, with the oracles' own leave-one-out value), the competition
  forget quality F, the U-LiRA AUC and the relearn steps — each only when some record holds it;
* a one-line verdict per method (`verdict`), which says when output-level and representation-level evidence
  disagree;
* figures: MIA ROC curves on log-log axes and per-example score histograms (oracle-margin |z|, competition ε).

The verdict rule (stated in the report's notes):
  output level passes  ⇔  avg. gap ≤ noise floor + 0.5 pp (0.5 pp when the records hold no noise floor);
  representation level fails  ⇔  CKA to retrained on the forget set below the original's CKA to retrained,
                                 or the probe on the forgotten data (forgotten classes; random forgetting:
                                 the held-out test set) beats the retrained model's features by > 1 pp.
The two *disagree* when the output level passes and the representation level fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .identity import ORIGINAL, RETRAINED, identity
from .stats import summarize

GAP_MARGIN_PP = 0.5
PROBE_MARGIN_PP = 1.0
ROC_ATTACK = "loss"

VERDICT_RULE = (
    f"Verdict rule: the output level passes when the avg. gap is at most the noise floor + {GAP_MARGIN_PP} pp "
    f"({GAP_MARGIN_PP} pp without a floor); the representation level fails when CKA to the retrained model on the "
    "forget set is below the original's, or when the linear probe on the forgotten data beats the retrained "
    f"model's features by more than {PROBE_MARGIN_PP:g} pp. DISAGREE = output passes, representation fails."
)


@dataclass
class AuditRow:
    label: str
    kind: str  # "original" | "retrained" | "method"
    values: dict[str, dict[str, Any] | None]  # column key -> summarize() over seeds
    roc: dict[str, list[float]] | None = None  # first seed's ROC (thinned)
    klom_hist: list[int] | None = None  # |z| counts over seeds (forget)
    eps: list[float] = field(default_factory=list)  # competition ε per example, pooled over seeds
    verdict: str = ""


@dataclass
class AuditSection:
    rows: list[AuditRow]
    klom_edges: list[float] | None = None
    klom_null_hist: list[int] | None = None
    columns: list[tuple[str, str, int]] = field(default_factory=list)  # (key, header, decimals) with data


# key, header, decimals, where: ("m", role metric) or ("x", extras path)
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("avg_gap_to_retrained", "Avg. gap", 2),
    ("noise_floor_avg_gap", "Noise floor", 2),
    (f"mia_auc_forget_{ROC_ATTACK}", "MIA AUC", 3),
    (f"mia_tpr_at_fpr_0.01_forget_{ROC_ATTACK}", "TPR@1%", 3),
    (f"mia_tpr_at_fpr_0.001_forget_{ROC_ATTACK}", "TPR@0.1%", 3),
    ("probe_forgotten", "Probe (%)", 1),
    ("probe_advantage", "Probe − retrained (pp)", 1),
    ("cka_to_retrained_forget", "CKA→Retrain (forget)", 3),
    ("cka_original", "Original's CKA", 3),
    ("klom_abs_z_mean_forget", "Margin |z| (forget)", 2),
    ("klom_null", "Oracles' |z|", 2),
    ("competition_forget_quality", "Comp. F", 3),
    ("ulira_auc", "U-LiRA AUC", 3),
    ("relearn_steps_forget", "Relearn steps", 0),
)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _metrics(rec: dict[str, Any], role: str) -> dict[str, Any]:
    m = ((rec.get("models") or {}).get(role) or {}).get("metrics")
    return m if isinstance(m, dict) else {}


def _extras(rec: dict[str, Any], audit: str) -> dict[str, Any]:
    x = (rec.get("extras") or {}).get(audit)
    return x if isinstance(x, dict) else {}


def _probe(m: dict[str, Any], classwise: bool) -> float | None:
    return _num(m.get("probe_accuracy_test_forgotten_classes" if classwise else "probe_accuracy_test"))


def _values(rec: dict[str, Any], role: str, classwise: bool) -> dict[str, float | None]:
    m = _metrics(rec, role)
    out: dict[str, float | None] = {k: _num(m.get(k)) for k, _, _ in COLUMNS}
    out["probe_forgotten"] = _probe(m, classwise)
    pr = _probe(_metrics(rec, "retrained"), classwise)
    out["probe_advantage"] = (
        out["probe_forgotten"] - pr if out["probe_forgotten"] is not None and pr is not None else None
    )
    if role != "retrained":
        out["cka_original"] = _num(_metrics(rec, "original").get("cka_to_retrained_forget"))
    if role == "unlearned":
        out["avg_gap_to_retrained"] = _num((rec.get("gaps_to_retrained") or {}).get("avg_gap_to_retrained"))
        out["noise_floor_avg_gap"] = _num(rec.get("noise_floor_avg_gap"))
        km = _extras(rec, "oracle_margins").get("forget") or {}
        out["klom_null"] = _num(km.get("null_abs_z_mean"))
        for name in ("competition_lite", "competition"):
            if _extras(rec, name):
                out["competition_forget_quality"] = _num(_extras(rec, name).get("competition_forget_quality"))
        out["ulira_auc"] = _num(_extras(rec, "ulira_lite").get("ulira_auc"))
    return out


def verdict(values: dict[str, dict[str, Any] | None]) -> str:
    """One line: do output-level and representation-level evidence agree? (rule in the module docstring)."""

    def mean(k: str) -> float | None:
        s = values.get(k)
        return None if s is None else float(s["mean"])

    gap, floor = mean("avg_gap_to_retrained"), mean("noise_floor_avg_gap")
    cka, cka_o, adv = mean("cka_to_retrained_forget"), mean("cka_original"), mean("probe_advantage")
    if cka is None and adv is None:
        return "no representation audits in the records (run with --audits standard)"
    flags = []
    if cka is not None and cka_o is not None and cka < cka_o:
        flags.append(f"CKA to retrained on forget {cka:.2f} < the original's {cka_o:.2f}")
    if adv is not None and adv > PROBE_MARGIN_PP:
        flags.append(f"probe on the forgotten data {adv:+.1f} pp over the retrained model's features")
    if gap is None:
        return "representation: " + ("; ".join(flags) if flags else "matches the retrained model") + " (no gap)"
    limit = (floor or 0.0) + GAP_MARGIN_PP
    output_ok = gap <= limit
    out_text = f"avg. gap {gap:.2f} pp {'≤' if output_ok else '>'} {limit:.2f} pp"
    if output_ok and flags:
        return f"DISAGREE: output level passes ({out_text}) but {'; '.join(flags)}"
    if output_ok:
        return f"agree: passes at output ({out_text}) and representation level"
    if flags:
        return f"agree: fails at output ({out_text}) and representation level ({'; '.join(flags)})"
    return f"output level fails ({out_text}); representations match the retrained model"


def audit_section(records: list[dict[str, Any]], classwise: bool) -> AuditSection | None:
    """The audits section of one scenario's records (None when no record holds an audit)."""

    if not any(_extras(r, a) for r in records for a in ("mia_population", "linear_probe", "cka", "oracle_margins")):
        return None
    by_label: dict[str, list[dict[str, Any]]] = {}
    baseline: dict[Any, dict[str, Any]] = {}
    for rec in records:
        ident = identity(rec)
        by_label.setdefault(ident["label"], []).append(rec)
        baseline.setdefault(ident["seed"], rec)
    rows: list[AuditRow] = []
    groups = [(ORIGINAL, "original", list(baseline.values())), (RETRAINED, "retrained", list(baseline.values()))]
    groups += [(label, "unlearned", rs) for label, rs in by_label.items()]
    edges, null_hist = None, None
    for label, role, rs in groups:
        vals = [_values(r, role, classwise) for r in rs]
        summary = {k: summarize(v.get(k) for v in vals) for k, _, _ in COLUMNS}
        roc = ((_extras(rs[0], "mia_population").get("roc") or {}).get(role)) if rs else None
        row = AuditRow(label, "method" if role == "unlearned" else role, summary, roc)
        if role == "unlearned":
            hists = [(_extras(r, "oracle_margins").get("forget") or {}) for r in rs]
            hists = [h for h in hists if h.get("hist_model")]
            if hists:
                row.klom_hist = [sum(c) for c in zip(*(h["hist_model"] for h in hists), strict=True)]
                edges = edges or hists[0].get("hist_edges")
                nh = [sum(c) for c in zip(*(h["hist_null"] for h in hists), strict=True)]
                null_hist = nh if null_hist is None else [a + b for a, b in zip(null_hist, nh, strict=True)]
            for r in rs:
                for name in ("competition_lite", "competition"):
                    eps = _extras(r, name).get("eps_per_example")
                    if isinstance(eps, list):
                        row.eps += [float(e) for e in eps if _num(e) is not None]
            row.verdict = verdict(summary)
        rows.append(row)
    cols = [c for c in COLUMNS if any(r.values.get(c[0]) is not None for r in rows)]
    return AuditSection(rows, edges, null_hist, cols)


def _cell(s: dict[str, Any] | None, decimals: int) -> str:
    if s is None:
        return "–"
    text = f"{s['mean']:.{decimals}f}"
    if s.get("std") is not None:
        text += f" ± {s['std']:.{decimals}f}"
    return text


def table(section: AuditSection) -> tuple[list[str], list[dict[str, Any]]]:
    headers = ["Method", *[h for _, h, _ in section.columns], "Verdict"]
    rows = [
        {
            "label": r.label,
            "kind": r.kind,
            "cells": [_cell(r.values.get(k), d) for k, _, d in section.columns],
            "verdict": r.verdict,
        }
        for r in section.rows
    ]
    return headers, rows


def notes(section: AuditSection, classwise: bool) -> list[str]:
    probe = "forgotten-class test images" if classwise else "the held-out test set"
    return [
        f"MIA: the {ROC_ATTACK} attack, forget set (members) vs test images of the same classes (non-members), "
        "on each model; compare with the retrained model's value, not 50 %.",
        f"Probe: linear probe on frozen penultimate features, accuracy on {probe}; "
        "Probe − retrained > 0: the unlearned features still separate the forgotten data better.",
        "CKA→Retrain: linear CKA of penultimate features on the forget set; Original's CKA is the reference.",
        "Margin |z|: per-example distance of the model's margins from the distribution of K retrained oracles "
        "(KLoM-style); Oracles' |z| = the same score of each oracle against the others (leave-one-out).",
        VERDICT_RULE,
    ]


def markdown(section: AuditSection, classwise: bool) -> str:
    headers, rows = table(section)
    out = [
        "### Audits",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["--:"] * (len(headers) - 2) + ["---"]) + "|",
    ]
    for r in rows:
        cells = [r["label"].replace("|", "\\|"), *r["cells"], r["verdict"].replace("|", "\\|")]
        out.append("| " + " | ".join(cells) + " |")
    out += [""] + [f"- {n}" for n in notes(section, classwise)] + [""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ figures
def roc_figure(section: AuditSection, title: str) -> bytes | None:
    """MIA ROC curves (log-log), one per row with a stored curve; the diagonal is chance."""
    from .plots import _figure, _png

    rows = [r for r in section.rows if r.roc and r.roc.get("fpr")]
    if not rows:
        return None
    fig = _figure(7.0, 5.5)
    ax = fig.subplots()
    for r in rows:
        assert r.roc is not None
        pts = [(f, t) for f, t in zip(r.roc["fpr"], r.roc["tpr"], strict=True) if f > 0 and t > 0]
        if not pts:
            continue
        style = {"original": ("#9e9e9e", "--"), "retrained": ("#222222", "--")}.get(r.kind, (None, "-"))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=r.label, color=style[0], linestyle=style[1])
    ax.plot([1e-4, 1], [1e-4, 1], color="#bbbbbb", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(1e-4, 1.05)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(f"{title}: MIA ROC ({ROC_ATTACK} attack, forget vs test; first seed)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def score_histograms(section: AuditSection, title: str) -> bytes | None:
    """Per-example scores: oracle-margin |z| (each method beside the oracles' own) and competition ε."""
    from .plots import _figure, _png

    klom = [r for r in section.rows if r.klom_hist]
    eps = [r for r in section.rows if r.eps]
    if not klom and not eps:
        return None
    fig = _figure(11.0 if klom and eps else 7.0, 4.8)
    axes = fig.subplots(1, 2 if klom and eps else 1)
    axes = list(axes) if klom and eps else [axes]
    i = 0
    if klom and section.klom_edges:
        ax = axes[i]
        i += 1
        centres = [*section.klom_edges]
        for r in klom:
            assert r.klom_hist is not None
            total = sum(r.klom_hist) or 1
            ax.step(centres, [c / total for c in r.klom_hist], where="post", label=r.label)
        if section.klom_null_hist:
            total = sum(section.klom_null_hist) or 1
            ax.step(
                centres,
                [c / total for c in section.klom_null_hist],
                where="post",
                color="#222222",
                linestyle="--",
                label="oracles (leave-one-out)",
            )
        ax.set_xlabel("|z| of the margin vs K retrained oracles (last bin: ≥ 5)")
        ax.set_ylabel("share of forget examples")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if eps:
        ax = axes[i]
        for r in eps:
            ax.hist(r.eps, bins=[x / 2 for x in range(16)], histtype="step", label=r.label, density=True)
        ax.set_xlabel("competition ε per forget example (capped; lower is better)")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: per-example scores")
    fig.tight_layout()
    return _png(fig)
