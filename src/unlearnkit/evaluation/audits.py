"""Strong audits, off by default and selected by name (evaluation.md §2, §3, §4).

An audit reads the logits and penultimate features the suite collected in its shared forward pass
(declared in ``needs_logits`` / ``needs_features``), may need extra models passed to `evaluate` through
``extra_models`` (lists of unlearned / retrained runs, U-LiRA shadows), and returns per-model metrics
plus an ``extras`` section. Every audit states its requirements so `evaluate` can refuse before any
compute.

Names: ``mia_population``, ``relearn_time``, ``linear_probe``, ``cka``, ``competition``,
``competition_lite`` and ``ulira_lite``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import Registry
from . import competition as C
from . import functional as F
from . import mia
from .metrics import MetricInfo

__all__ = [
    "AUDITS",
    "Audit",
    "AuditContext",
    "cka_to_retrained",
    "competition_from_models",
    "linear_probe",
    "population_mias",
    "relearn_steps",
]


@dataclass
class AuditContext:
    """Everything an audit may read; built by `EvaluationSuite`."""

    models: dict[str, torch.nn.Module]
    datasets: dict[str, Any]
    split: Any
    device: torch.device
    seed: int = 0
    logits: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    features: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    extra_models: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1024
    train_set: Any = None  # the full training set (U-LiRA pools index into it)

    def get_features(self, role: str, split: str) -> np.ndarray:
        """Penultimate features of ``role`` on ``split`` (from the shared pass, else one extra pass)."""
        if (role, split) not in self.features:
            self.features[(role, split)] = extract_features(
                self.models[role], self.datasets[split], self.device, self.batch_size
            )
        return self.features[(role, split)]

    def labels(self, split: str) -> np.ndarray:
        return self.datasets[split].targets.numpy()


@dataclass(frozen=True)
class Audit:
    """An audit: its function, what it needs, the record keys it writes and the option names it reads."""

    name: str
    fn: Callable[[AuditContext], dict[str, Any]]
    summary: str
    section: str
    needs_logits: frozenset[str] = frozenset()
    needs_features: frozenset[str] = frozenset()
    needs_models: frozenset[str] = frozenset()
    needs_extra: tuple[str, ...] = ()
    classwise_only: bool = False
    outputs: tuple[MetricInfo, ...] = ()
    options: tuple[str, ...] = ()

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise `ConfigError` naming the valid option names when ``options`` holds another key."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise ConfigError(
                f"unknown option {', '.join(map(repr, unknown))} of audit {self.name}; valid options: {valid}"
            )


AUDITS: Registry[Audit] = Registry("audit", list_command="unlearnkit list metrics")


def _register(audit: Audit) -> None:
    AUDITS.register(audit.name)(audit)


@torch.no_grad()
def extract_features(model: torch.nn.Module, dataset: Any, device: Any, batch_size: int = 1024) -> np.ndarray:
    """``model.forward_features`` over ``dataset`` in eval mode (our models expose it; others must too)."""
    from ..data.loading import iter_batches

    if not hasattr(model, "forward_features"):
        raise ConfigError(
            f"{type(model).__name__} has no forward_features(); the linear probe and CKA need the "
            "penultimate features (unlearnkit models provide them)"
        )
    was = model.training
    model.eval()
    out = [
        model.forward_features(x).flatten(1).float().cpu().numpy()  # type: ignore[operator]
        for x, _ in iter_batches(dataset, batch_size, device=device)
    ]
    model.train(was)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# ---------------------------------------------------------------------------------- population MIAs
POPULATION_ATTACKS = tuple(mia.ATTACK_SCORES)


def population_mias(
    logits_forget: Any,
    labels_forget: Any,
    logits_nonmember: Any,
    labels_nonmember: Any,
    attacks: tuple[str, ...] = POPULATION_ATTACKS,
) -> dict[str, float]:
    """U-MIAs of §3.1: forget (target "members") vs non-members on one model, per attack.

    Returns ``mia_auc_forget_<attack>`` and ``mia_tpr_at_fpr_<0.01,0.001>_forget_<attack>`` (a threshold
    attack over the per-sample score, §3.4).
    """
    out: dict[str, float] = {}
    for a in attacks:
        s_in = mia.attack_scores(a, logits_forget, labels_forget)
        s_out = mia.attack_scores(a, logits_nonmember, labels_nonmember)
        r = mia.population_mia(s_in, s_out)
        out[f"mia_auc_forget_{a}"] = r["auc"]
        out[f"mia_tpr_at_fpr_0.01_forget_{a}"] = r["tpr_at_fpr_0.01"]
        out[f"mia_tpr_at_fpr_0.001_forget_{a}"] = r["tpr_at_fpr_0.001"]
    return out


def _audit_info(
    name: str, unit: str, higher_is_better: bool | None, section: str, summary: str, gap: bool = True
) -> MetricInfo:
    return MetricInfo(name, unit, higher_is_better, False, section, summary, kind="audit", gap=gap)


def _audit_population(ctx: AuditContext) -> dict[str, Any]:
    nonmember = "test_forgotten_classes" if ctx.split.is_classwise else "test"
    attacks = tuple(ctx.options.get("attacks", POPULATION_ATTACKS))
    roc_attack = str(ctx.options.get("roc_attack", "loss"))
    per = {}
    rocs = {}
    for role in ctx.models:
        lf, yf = ctx.logits[(role, "forget")]
        ln, yn = ctx.logits[(role, nonmember)]
        per[role] = population_mias(lf, yf, ln, yn, attacks)
        fpr, tpr, _ = F.binary_roc(mia.attack_scores(roc_attack, lf, yf), mia.attack_scores(roc_attack, ln, yn))
        rocs[role] = roc_points(fpr, tpr)
    extras = {"nonmember_set": nonmember, "attacks": list(attacks), "roc_attack": roc_attack, "roc": rocs}
    return {"per_model": per, "extras": extras}


def roc_points(fpr: Any, tpr: Any, n: int = 64) -> dict[str, list[float]]:
    """A ROC curve thinned for the record: the upper envelope at ``n`` FPRs, log-spaced from 1e-4 to 1 (plus 0)."""
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    grid = np.concatenate([[0.0], np.logspace(-4, 0, n)])
    idx = np.searchsorted(fpr, grid, side="right") - 1  # the last ROC point with FPR ≤ grid value
    best = np.maximum.accumulate(tpr)[np.clip(idx, 0, len(tpr) - 1)]
    return {"fpr": [round(float(x), 6) for x in grid], "tpr": [round(float(x), 6) for x in best]}


_register(
    Audit(
        "mia_population",
        _audit_population,
        "population MIAs (loss, confidence, entropy, m_entropy, "
        "correctness, φ): AUC and TPR at 1% / 0.1% FPR, forget vs test",
        "3.1",
        needs_logits=frozenset({"forget", "test", "test_forgotten_classes"}),
        outputs=tuple(
            info
            for a in POPULATION_ATTACKS
            for info in (
                _audit_info(f"mia_auc_forget_{a}", "-", None, "3.1", f"AUC of the {a} attack, forget vs test"),
                *(
                    _audit_info(f"mia_tpr_at_fpr_{f}_forget_{a}", "-", None, "3.4", f"TPR at FPR {f}, {a} attack")
                    for f in ("0.01", "0.001")
                ),
            )
        ),
        options=("attacks", "roc_attack"),
    )
)


# ------------------------------------------------------------------------------------- relearn time
def relearn_steps(
    model: torch.nn.Module,
    relearn_set: Any,
    eval_set: Any,
    target_accuracy: float,
    *,
    lr: float = 1e-3,
    batch_size: int = 256,
    max_steps: int = 2000,
    seed: int = 0,
    device: Any = "cpu",
) -> tuple[int, bool]:
    """Optimiser steps of fine-tuning a copy of ``model`` on ``relearn_set`` until its accuracy on
    ``eval_set`` reaches ``target_accuracy`` (%), evaluated after every step (§4.2, [AIN]).

    Adam (lr 1e-3), batch 256; the data order depends only on ``seed``, so two models see the same
    batches. Returns ``(steps, censored)``; censored runs return ``max_steps``.
    """
    from ..data.loading import iter_batches
    from ..training import predict_logits

    net = copy.deepcopy(model).to(device)

    def acc() -> float:
        logits, y = predict_logits(net, eval_set, device=device)
        return F.accuracy(logits, y)

    if acc() >= target_accuracy:
        return 0, False
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    while step < max_steps:
        for x, y in iter_batches(relearn_set, batch_size, shuffle=True, generator=gen, device=device):
            net.train()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if acc() >= target_accuracy:
                return step, False
            if step >= max_steps:
                break
    return max_steps, True


def _audit_relearn(ctx: AuditContext) -> dict[str, Any]:
    opts = ctx.options
    alpha = float(opts.get("alpha", 0.05))
    max_steps = int(opts.get("max_steps", 2000))
    forget = ctx.datasets["forget"]
    if ctx.split.is_classwise:
        frac = float(opts.get("relearn_fraction", 0.1))
        rng = np.random.default_rng(ctx.seed)
        k = max(1, round(frac * len(forget)))
        relearn_set = forget.subset(np.sort(rng.permutation(len(forget))[:k]))
        eval_set = ctx.datasets["test_forgotten_classes"]
        eval_name = "test_forgotten_classes"
    else:
        relearn_set, eval_set, eval_name = forget, forget, "forget"
    ref_logits, ref_y = ctx.logits.get(("original", eval_name)) or predict_np(
        ctx.models["original"], eval_set, ctx.device
    )
    fa_ref = F.accuracy(ref_logits, ref_y)
    target = (1 - alpha) * fa_ref
    per: dict[str, dict[str, Any]] = {}
    for role, model in ctx.models.items():
        steps, censored = relearn_steps(
            model,
            relearn_set,
            eval_set,
            target,
            lr=float(opts.get("lr", 1e-3)),
            batch_size=int(opts.get("batch_size", 256)),
            max_steps=max_steps,
            seed=ctx.seed,
            device=ctx.device,
        )
        per[role] = {"relearn_steps_forget": steps, "relearn_steps_forget_censored": censored}
    if "retrained" in per and "unlearned" in per:
        r = per["retrained"]["relearn_steps_forget"]
        per["unlearned"]["ain_to_retrained"] = per["unlearned"]["relearn_steps_forget"] / r if r else float("nan")
    return {
        "per_model": per,
        "extras": {
            "alpha": alpha,
            "target_accuracy": target,
            "max_steps": max_steps,
            "relearn_size": len(relearn_set),
            "eval_set": eval_name,
        },
    }


def predict_np(model: torch.nn.Module, ds: Any, device: Any) -> tuple[np.ndarray, np.ndarray]:
    from ..training import predict_logits

    lo, y = predict_logits(model, ds, device=device)
    return lo.numpy(), y.numpy()


_register(
    Audit(
        "relearn_time",
        _audit_relearn,
        "relearn time (Adam steps to regain (1−α)·FA of the original) and AIN = rt(unlearned)/rt(retrained)",
        "4.2",
        needs_logits=frozenset({"forget", "test_forgotten_classes"}),
        needs_models=frozenset({"original", "retrained"}),
        outputs=(
            _audit_info("relearn_steps_forget", "steps", None, "4.2", "optimiser steps to relearn the forget data"),
            _audit_info(
                "ain_to_retrained", "-", None, "4.2", "Anamnesis Index rt(unlearned)/rt(retrained), ideal 1", gap=False
            ),
        ),
        options=("alpha", "max_steps", "relearn_fraction", "lr", "batch_size"),
    )
)


# ------------------------------------------------------------------------------------- linear probe
def linear_probe(
    features: Any, labels: Any, *, seed: int = 0, forgotten_classes: tuple[int, ...] = ()
) -> dict[str, float]:
    """Linear-probe accuracy (%) on frozen features (§4.3).

    Stratified halves of the held-out set (fixed ``seed``); standardise with the first half; multinomial
    logistic regression (L2, C=1, lbfgs, max_iter 1000) fit on the first half, scored on the second.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = F.as_numpy(features, np.float64), F.as_numpy(labels).astype(np.int64)
    try:
        x1, x2, y1, y2 = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
    except ValueError:  # a class with a single sample cannot be stratified
        x1, x2, y1, y2 = train_test_split(x, y, test_size=0.5, random_state=seed)
    mu, sd = x1.mean(0), x1.std(0)
    sd[sd == 0] = 1.0
    clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000)
    clf.fit((x1 - mu) / sd, y1)
    pred = clf.predict((x2 - mu) / sd)
    out = {"probe_accuracy_test": float(100.0 * (pred == y2).mean())}
    if forgotten_classes:
        sel = np.isin(y2, forgotten_classes)
        out["probe_accuracy_test_forgotten_classes"] = (
            float(100.0 * (pred[sel] == y2[sel]).mean()) if sel.any() else float("nan")
        )
    return out


def _audit_probe(ctx: AuditContext) -> dict[str, Any]:
    splits = ["test", "test_forgotten_classes"] if ctx.split.is_classwise else ["test"]
    y = np.concatenate([ctx.labels(s) for s in splits])
    per = {}
    for role in ctx.models:
        feats = np.concatenate([ctx.get_features(role, s) for s in splits])
        per[role] = linear_probe(feats, y, seed=ctx.seed, forgotten_classes=tuple(ctx.split.forget_classes))
    return {"per_model": per, "extras": {"set": "+".join(splits), "n": len(y)}}


_register(
    Audit(
        "linear_probe",
        _audit_probe,
        "linear probe on frozen penultimate features of held-out test images",
        "4.3",
        needs_features=frozenset({"test", "test_forgotten_classes"}),
        outputs=(
            _audit_info("probe_accuracy_test", "%", None, "4.3", "linear-probe accuracy on test halves"),
            _audit_info(
                "probe_accuracy_test_forgotten_classes", "%", None, "4.3", "linear-probe accuracy on forgotten classes"
            ),
        ),
    )
)


# ---------------------------------------------------------------------------------------------- CKA
def cka_to_retrained(features_model: Any, features_retrained: Any, limit: int = 5000) -> float:
    """Linear CKA between a model's and the retrained model's features on the first ``limit`` samples (§4.4)."""
    return F.linear_cka(F.as_numpy(features_model)[:limit], F.as_numpy(features_retrained)[:limit])


def _audit_cka(ctx: AuditContext) -> dict[str, Any]:
    limit = int(ctx.options.get("limit", 5000))
    per: dict[str, dict[str, float]] = {}
    for role in ctx.models:
        if role == "retrained":
            continue
        per[role] = {
            f"cka_to_retrained_{s}": cka_to_retrained(
                ctx.get_features(role, s), ctx.get_features("retrained", s), limit
            )
            for s in ("forget", "test")
        }
    extras: dict[str, Any] = {"limit": limit}
    if "retrained_2" in per:  # a second retrained seed: CKA between independent retrainings is the ceiling
        for s in ("forget", "test"):
            extras[f"ceiling_cka_retrained_2_{s}"] = per["retrained_2"][f"cka_to_retrained_{s}"]
    return {"per_model": per, "extras": extras}


_register(
    Audit(
        "cka",
        _audit_cka,
        "linear CKA of penultimate features to the retrained model (forget, test)",
        "4.4",
        needs_features=frozenset({"forget", "test"}),
        needs_models=frozenset({"retrained"}),
        outputs=tuple(
            _audit_info(f"cka_to_retrained_{s}", "-", True, "4.4", f"linear CKA to retrained on {s}", gap=False)
            for s in ("forget", "test")
        ),
        options=("limit",),
    )
)


# ------------------------------------------------------------------------------------- competition
def competition_from_models(
    unlearned: list[torch.nn.Module],
    retrained: list[torch.nn.Module],
    datasets: dict[str, Any],
    *,
    ceiling: list[torch.nn.Module] | None = None,
    rules: tuple[str, ...] = ("single", "double"),
    thresholds_per_unit: int = 100,
    device: Any = "cpu",
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Competition score (§2) from N unlearned and N retrained models (and N more retrained for the ceiling).

    ``datasets`` holds ``forget``, ``retain`` and ``test`` (`ImageDataset`). Returns F, the utility ratios,
    the score, the ε histogram, the bootstrap 95% interval of F, the per-example ε (as a list) and, with
    ``ceiling``, ``competition_ceiling_forget_quality`` = F(R' vs R).
    """
    n = len(unlearned)
    if n != len(retrained):
        raise ConfigError(
            f"the competition score needs as many unlearned as retrained models, got {n} and {len(retrained)}"
        )
    C.epsilon_max(n)

    def stats(models: list[torch.nn.Module]) -> tuple[np.ndarray, float, float]:
        phis, ra, ta = [], [], []
        for m in models:
            lf, yf = predict_np(m, datasets["forget"], device)
            phis.append(F.logit_scaled_confidence(lf, yf))
            ra.append(F.accuracy(*predict_np(m, datasets["retain"], device)))
            ta.append(F.accuracy(*predict_np(m, datasets["test"], device)))
        return np.stack(phis), float(np.mean(ra)), float(np.mean(ta))

    phi_u, ra_u, ta_u = stats(unlearned)
    phi_r, ra_r, ta_r = stats(retrained)
    eps = C.epsilons(phi_r, phi_u, rules=rules, thresholds_per_unit=thresholds_per_unit)
    fq = C.forget_quality(eps, n)
    lo, hi = C.bootstrap_forget_quality(eps, n, replicates=bootstrap, seed=seed)
    out: dict[str, Any] = {
        "N": n,
        "rules": list(rules),
        "thresholds_per_unit": thresholds_per_unit,
        "competition_forget_quality": fq,
        "competition_forget_quality_ci95": [lo, hi],
        "ratio_retain": ra_u / ra_r,
        "ratio_test": ta_u / ta_r,
        "competition_score": C.competition_score(fq, ra_u, ra_r, ta_u, ta_r),
        "competition_eps_histogram": C.eps_histogram(eps, n),
        "eps_per_example": eps.tolist(),
    }
    if ceiling:
        if len(ceiling) != n:
            raise ConfigError(f"the ceiling needs N = {n} more retrained models, got {len(ceiling)}")
        phi_c, _, _ = stats(ceiling)
        out["competition_ceiling_forget_quality"] = C.forget_quality(
            C.epsilons(phi_r, phi_c, rules=rules, thresholds_per_unit=thresholds_per_unit), n
        )
    return out


def _audit_competition(ctx: AuditContext, lite: bool = False) -> dict[str, Any]:
    ex = ctx.extra_models
    rules = tuple(ctx.options.get("rules", ("single", "double")))
    tpu = int(ctx.options.get("thresholds_per_unit", 50 if lite else 100))
    res = competition_from_models(
        list(ex["unlearned_runs"]),
        list(ex["retrained_runs"]),
        ctx.datasets,
        ceiling=list(ex["ceiling_runs"]) if ex.get("ceiling_runs") else None,
        rules=rules,
        thresholds_per_unit=tpu,
        device=ctx.device,
        bootstrap=int(ctx.options.get("bootstrap", 1000)),
        seed=ctx.seed,
    )
    res["variant"] = "lite" if lite else "full"
    return {"per_model": {}, "extras": res}


COMPETITION_OUTPUTS = (
    _audit_info("competition_forget_quality", "-", True, "2", "F: mean H-score of per-example ε", gap=False),
    _audit_info("competition_score", "-", True, "2", "F · RA_U/RA_R · TA_U/TA_R", gap=False),
    _audit_info(
        "competition_ceiling_forget_quality",
        "-",
        True,
        "2",
        "F of N more retrained models vs the N retrained",
        gap=False,
    ),
)
_register(
    Audit(
        "competition",
        _audit_competition,
        "NeurIPS-2023 competition ε score over N unlearned vs N "
        "retrained models (extra_models: unlearned_runs, retrained_runs, ceiling_runs)",
        "2",
        needs_extra=("unlearned_runs", "retrained_runs"),
        outputs=COMPETITION_OUTPUTS,
        options=("rules", "thresholds_per_unit", "bootstrap"),
    )
)
_register(
    Audit(
        "competition_lite",
        lambda ctx: _audit_competition(ctx, lite=True),
        "cheap competition score (50 thresholds per unit; N = 16 suggested)",
        "2.8",
        needs_extra=("unlearned_runs", "retrained_runs"),
        outputs=COMPETITION_OUTPUTS,
        options=("rules", "thresholds_per_unit", "bootstrap"),
    )
)


# ------------------------------------------------------------------------------------------- U-LiRA
def _audit_ulira(ctx: AuditContext) -> dict[str, Any]:
    from .ulira import UliraShadows, ulira_lite

    shadows = ctx.extra_models["ulira"]
    if not isinstance(shadows, UliraShadows):
        raise ConfigError("extra_models['ulira'] must be an UliraShadows (see evaluation.ulira.build_ulira_shadows)")
    res = ulira_lite(
        shadows, ctx.train_set, device=ctx.device, fix_variance=bool(ctx.options.get("fix_variance", True))
    )
    return {"per_model": {}, "extras": res}


_register(
    Audit(
        "ulira_lite",
        _audit_ulira,
        "U-LiRA-lite: per-example LiRA over unlearned shadows, leave-one-out (extra_models: ulira)",
        "3.3",
        needs_extra=("ulira",),
        outputs=(
            _audit_info("ulira_auc", "-", None, "3.3", "U-LiRA AUC (0.5 = indistinguishable)", gap=False),
            _audit_info("ulira_balanced_accuracy", "%", None, "3.3", "U-LiRA best balanced accuracy", gap=False),
            _audit_info("ulira_tpr_at_fpr_0.01", "-", None, "3.3", "U-LiRA TPR at 1% FPR", gap=False),
        ),
        options=("fix_variance",),
    )
)
