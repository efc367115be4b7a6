"""`CertifiedHead`: L2-regularised one-vs-rest logistic heads with (ε, δ)-certified removal (Guo, Goldstein,
Hannun, van der Maaten, "Certified Data Removal from Machine Learning Models", ICML 2020).

Notation: embedded features x̃_i ∈ R^D with ‖x̃_i‖ ≤ 1 (`unlearnkit.heads.linear.embed`), one-vs-rest labels
y_ik ∈ {−1, +1}, one weight vector w_k per class, logistic loss ℓ(z, y) = log(1 + e^(−yz)).

**Training** (Guo et al. §3, objective perturbation). Per class, with a noise vector b_k ~ N(0, σ²I_D) drawn
fresh for every training,

    L_b(w_k; D) = Σ_i ℓ(w_kᵀx̃_i, y_ik) + (λn/2)‖w_k‖² + b_kᵀw_k,

minimised in float64 to high precision (L-BFGS on L_b/n, then Newton steps). The achieved gradient norm
‖∇L_b(w_k*; D)‖ is counted against the budget from the start ([Ours]: the removal step assumes a zero gradient,
so what training leaves adds to every later residual). b is never stored: the model keeps a SHA-256 commitment
to it (`commitment`), since the guarantee holds over b's randomness.

**Removing m points** (one Newton step on the remaining data D′, n′ = n − m):

    Δ_k = λ m w_k + Σ_{j removed} ∇ℓ(w_kᵀx̃_j, y_jk)      (∇ℓ = −y σ(−yz) x̃)
    H_k = Σ_{i ∈ D′} σ(z_ik)σ(−z_ik) x̃_i x̃_iᵀ + λn′ I    (the Hessian of L_b(·; D′) at w_k)
    w_k⁻ = w_k + H_k⁻¹ Δ_k

b cancels from the step (L_b(·; D′) = L_b(·; D) minus the removed terms), so removal never needs b.

**Residual bound** (Guo et al., Corollary 1, data-dependent; ℓ'' is γ-Lipschitz with γ = 1/4):

    β_k = γ ‖X′‖₂ ‖H_k⁻¹Δ_k‖₂ ‖X′ H_k⁻¹Δ_k‖₂        (X′: the n′ × D matrix of remaining features)

bounds ‖∇L_b(w_k⁻; D′)‖ beyond what the previous state left. Per class the bounds add up over requests:
B_k = (training residual) + Σ_requests β_k.

**Certificate** (Guo et al., Theorem 3). With c = √(2 ln(1.5/δ)), the removals are (ε, δ)-certified while the
gradient residual of the whole parameter (all K heads, one vector of K·D coordinates, b ~ N(0, σ²I_KD)) is at
most σε/c. Its norm is at most √(Σ_k B_k²) ([Ours]: the K heads are one linear model with a separable loss;
the triangle inequality per class, then the Euclidean norm over classes). So:

    accumulated = √(Σ_k B_k²),  budget = σε/c,  certified while accumulated ≤ budget,

and ε spent so far = c·accumulated/σ. A request whose bound would take the accumulated value over the budget is
not applied as a Newton step: the head is retrained from scratch on D′ with a fresh b (an exact removal), the
bounds restart from the new training residual, and the event is recorded.

**What the head keeps so that a removal reads only the removed points** ([Ours]; float64 buffers, saved by the
checkpoint service with the weights):

* ``gram`` = X′ᵀX′ (D × D), the Gram matrix of the remaining features. It is a function of the remaining data alone
  and is downdated exactly: G ← G − X_fᵀX_f. The bound's data-dependent norms come from it, exactly and without the
  data: ‖X′‖₂ = √λ_max(G) (eigvalsh, D × D) and ‖X′v‖₂ = √(vᵀGv).
* ``hessian`` (K × D × D), H_k of the remaining data **at the current weights**, and ``current`` (whether it is).
  The Newton step of the next removal needs the Hessian of D″ = D′ minus the removed points at the current
  weights, which is an exact downdate by the removed points' own terms:
  H_k(D″) = H_k(D′) − Σ_j σ(z_jk)σ(−z_jk) x̃_j x̃_jᵀ − λmI. So the stored-Hessian step equals the data-pass step
  up to float rounding (tested), and the bound is the same number: nothing is approximated and the certificate
  is Guo et al.'s as stated above.

What cannot be done without the data: after a Newton step the weights change, and with them every remaining
point's curvature σ(z)σ(−z), so the Hessian at the new weights needs a pass over the remaining features
(`refresh`; the feature cache or the backbone — never a deleted point). A Hessian at earlier weights is **not**
kept, not even as a stale approximation: it is a function of those weights, which were trained on the removed
point, and (knowing the remaining data) it can reveal them; together with the current weights it would reveal the
Newton step H⁻¹Δ, i.e. the removed point's gradient. The certificate covers the released state only when every
stored tensor is a function of the remaining data and of the current (certified) weights — hence ``hessian`` is
zeroed and ``current`` cleared by each Newton step until `refresh` recomputes it. A removal while it is not current
takes the data path (the remaining features; the same formulas), and so does a retrain. b is never stored.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, IncompatibleError
from .linear import signs

#: ℓ'' of the logistic loss is γ-Lipschitz with γ = 1/4 (Guo et al.).
GAMMA = 0.25
#: Stop polishing the training optimum once every class's gradient norm (of L_b, sum form) is under this.
TRAIN_TOL = 1e-8


def c_of(delta: float) -> float:
    """c = √(2 ln(1.5/δ)) of Guo et al.'s Theorem 3."""
    return math.sqrt(2.0 * math.log(1.5 / delta))


def check_privacy(sigma: float, eps: float, delta: float, lam: float) -> None:
    """σ > 0, ε > 0, 0 < δ < 1, λ > 0, all finite, or a `ConfigError` naming the option."""
    values: tuple[tuple[str, Any], ...] = (("sigma", sigma), ("eps", eps), ("lam", lam))
    for name, v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
    d: Any = delta
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r} (e.g. delta=1e-5)")


@dataclass(frozen=True)
class Budget:
    """The certificate's arithmetic: per-class accumulated bounds against σε/c."""

    sigma: float
    eps: float
    delta: float

    @property
    def c(self) -> float:
        return c_of(self.delta)

    @property
    def limit(self) -> float:
        """σε/c: the largest accumulated gradient-residual bound that is still (ε, δ)-certified."""
        return self.sigma * self.eps / self.c

    @staticmethod
    def total(per_class: torch.Tensor) -> float:
        """√(Σ_k B_k²): the bound on the whole parameter's gradient residual."""
        return float(per_class.to(torch.float64).norm())

    def fits(self, per_class: torch.Tensor) -> bool:
        return self.total(per_class) <= self.limit

    def eps_spent(self, per_class: torch.Tensor) -> float:
        """c·accumulated/σ: the ε the current state is certified at."""
        return self.c * self.total(per_class) / self.sigma


def commitment(b: torch.Tensor) -> str:
    """SHA-256 of the noise b (float64, C order, with its shape): binds the head to its b without revealing it."""
    b = b.detach().to("cpu", torch.float64).contiguous()
    h = hashlib.sha256(f"certified-head-b|{tuple(b.shape)}|".encode())
    h.update(b.numpy().tobytes())
    return h.hexdigest()


def _mean_grad(w: torch.Tensor, x: torch.Tensor, s: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """∇(L_b/n) for all classes at once (K × D)."""
    n = len(x)
    z = x @ w.T
    return (-s * torch.sigmoid(-s * z)).T @ x / n + lam * w + b / n


def _hessian(x: torch.Tensor, w_k: torch.Tensor, scale: float, ridge: float) -> torch.Tensor:
    """scale · Σ σ(z)σ(−z) x xᵀ + ridge·I for one class."""
    z = x @ w_k
    d = torch.sigmoid(z) * torch.sigmoid(-z)
    h = x.T @ (x * d[:, None]) * scale
    h.diagonal().add_(ridge)
    return h


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, lam: float, b: torch.Tensor, max_iter: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin of L_b per class (K × D) and the achieved ‖∇L_b‖ per class (sum form)."""
    x = x.to(torch.float64)
    s = signs(y, num_classes)
    n, dim = x.shape
    b = b.to(torch.float64)
    w = torch.zeros(num_classes, dim, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-12,
        tolerance_change=1e-16,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            wd = w.detach()
            z = x @ wd.T
            loss = nn.functional.softplus(-s * z).sum() / n + lam / 2 * (wd**2).sum() + (b * wd).sum() / n
            w.grad = _mean_grad(wd, x, s, b, lam)
        return loss

    opt.step(closure)
    out = w.detach().clone()
    for _ in range(6):  # Newton polish: quadratic convergence from the L-BFGS point
        g = _mean_grad(out, x, s, b, lam)
        if float(g.norm(dim=1).max()) * n <= TRAIN_TOL:
            break
        for k in range(num_classes):
            h = _hessian(x, out[k], 1.0 / n, lam)
            out[k] -= torch.linalg.solve(h, g[k])
    residual = _mean_grad(out, x, s, b, lam).norm(dim=1) * n
    return out, residual


Remaining = tuple[torch.Tensor, torch.Tensor]


def residual_bound(gram: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """β_k = γ ‖X′‖₂ ‖v_k‖ ‖X′v_k‖ per class from the remaining data's Gram G = X′ᵀX′ (‖X′‖₂² = λ_max(G),
    ‖X′v‖² = vᵀGv) and the Newton steps v_k (rows of ``steps``)."""
    top = float(torch.linalg.eigvalsh(gram)[-1])
    quad = ((steps @ gram) * steps).sum(dim=1).clamp_min(0.0).sqrt()
    return GAMMA * math.sqrt(max(top, 0.0)) * steps.norm(dim=1) * quad


class CertifiedHead(nn.Module):
    """The K logistic heads, their accumulated per-class residual bounds, the count of training points, and what a
    removal needs from the remaining data (their Gram and, while ``current``, their Hessian at the weights)."""

    kind = "certified"
    weight: torch.Tensor
    bound: torch.Tensor
    count: torch.Tensor
    gram: torch.Tensor
    hessian: torch.Tensor
    current: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        lam: float = 1e-3,
        sigma: float = 10.0,
        eps: float = 1.0,
        delta: float = 1e-5,
    ) -> None:
        super().__init__()
        check_privacy(sigma, eps, delta, lam)
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.lam, self.budget = float(lam), Budget(float(sigma), float(eps), float(delta))
        self.b_commitment = ""
        f64 = torch.float64
        self.register_buffer("weight", torch.zeros(num_classes, dim, dtype=f64))
        self.register_buffer("bound", torch.zeros(num_classes, dtype=f64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("gram", torch.zeros(dim, dim, dtype=f64))
        self.register_buffer("hessian", torch.zeros(num_classes, dim, dim, dtype=f64))
        self.register_buffer("current", torch.zeros((), dtype=torch.bool))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """One-vs-rest log-odds (n × K) of embedded features ``z``."""
        return z.to(self.weight.dtype) @ self.weight.T

    def draw_noise(self, generator: torch.Generator) -> torch.Tensor:
        """b ~ N(0, σ²I) for all K heads (K × D)."""
        return torch.randn(self.num_classes, self.dim, generator=generator, dtype=torch.float64) * self.budget.sigma

    def _hessians(self, x: torch.Tensor) -> torch.Tensor:
        """H_k = Σ σ(z)σ(−z) x̃x̃ᵀ + λnI of the rows ``x`` at the current weights, for every class (K × D × D)."""
        return torch.stack([_hessian(x, self.weight[k], 1.0, self.lam * len(x)) for k in range(self.num_classes)])

    def refresh(self, x_rem: torch.Tensor) -> None:
        """Recompute the stored Gram and Hessian from the remaining rows ``x_rem`` at the current weights (the pass
        over the remaining data that keeps the next removal free of it)."""
        if len(x_rem) != int(self.count):
            raise IncompatibleError(f"{len(x_rem)} remaining rows, but the head stands on {int(self.count)} points")
        x = x_rem.to("cpu", torch.float64)
        self.gram.copy_(x.T @ x)
        self.hessian.copy_(self._hessians(x))
        self.current.fill_(True)

    def fit(self, x: torch.Tensor, y: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
        """Train from scratch on ``x``, ``y`` with the noise ``b`` (which is not kept; its commitment is)."""
        if tuple(b.shape) != (self.num_classes, self.dim):
            raise ConfigError(f"the noise b must be {self.num_classes} × {self.dim}, got {tuple(b.shape)}")
        t0 = time.perf_counter()
        w, residual = fit_logistic(x, y, self.num_classes, self.lam, b)
        self.weight.copy_(w)
        self.bound.copy_(residual)
        self.count.fill_(len(x))
        self.b_commitment = commitment(b)
        self.refresh(x)
        return {"train_residual": float(residual.norm()), "seconds": time.perf_counter() - t0}

    def newton_removal(
        self, x_del: torch.Tensor, y_del: torch.Tensor, remaining: Remaining | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(w⁻, β, G″): the Newton-updated weights (K × D), the per-class residual bounds of this removal and the
        remaining data's Gram. ``remaining`` (features, labels of every remaining point) takes the data path;
        without it the stored Hessian and Gram are downdated by the removed rows (they must be ``current``)."""
        x_del = x_del.to("cpu", torch.float64)
        m = len(x_del)
        w = self.weight
        s_del = signs(y_del, self.num_classes)
        z_del = x_del @ w.T
        delta = self.lam * m * w + (-s_del * torch.sigmoid(-s_del * z_del)).T @ x_del  # K × D
        if remaining is None:
            if not bool(self.current):
                raise IncompatibleError(
                    "the certified head's stored Hessian is not at its current weights (a Newton step clears it until "
                    "refreshed): pass the remaining points' features"
                )
            gram = self.gram - x_del.T @ x_del
            curv = torch.sigmoid(z_del) * torch.sigmoid(-z_del)  # m × K
            hess = self.hessian.clone()
            for k in range(self.num_classes):
                hess[k] -= x_del.T @ (x_del * curv[:, k : k + 1])
            hess.diagonal(dim1=1, dim2=2).sub_(self.lam * m)
        else:
            x_rem = remaining[0].to("cpu", torch.float64)
            gram, hess = x_rem.T @ x_rem, self._hessians(x_rem)
        chol = torch.linalg.cholesky(hess)
        steps = torch.cholesky_solve(delta[:, :, None], chol)[:, :, 0]
        return w + steps, residual_bound(gram, steps), gram

    def remove(
        self,
        x_del: torch.Tensor,
        y_del: torch.Tensor,
        fresh_noise: Callable[[], torch.Tensor],
        remaining: Remaining | Callable[[], Remaining] | None = None,
    ) -> dict[str, Any]:
        """Remove the rows ``x_del``: a Newton step while the budget lasts, else a retrain on the remaining rows with
        ``fresh_noise()``. ``remaining`` gives the remaining rows (features, labels), or a function loading them;
        it is read only when the stored Hessian is not current or the head must be retrained. Returns the
        request's accounting (``hessian``: stored | data pass)."""
        m = len(x_del)
        if m == 0:
            raise IncompatibleError("the deletion request selects no training point")
        if m >= int(self.count):
            raise IncompatibleError("the request would remove every training point of the head; nothing to train on")
        cache: list[Remaining] = []

        def load() -> Remaining:
            if not cache:
                if remaining is None:
                    raise IncompatibleError(
                        "this removal needs the remaining points' features (the stored Hessian is not current, or "
                        "the budget forces a retrain): pass them"
                    )
                got = remaining() if callable(remaining) else remaining
                if len(got[0]) + m != int(self.count):
                    raise IncompatibleError(
                        f"{len(got[0])} remaining + {m} removed points, but the head stands on {int(self.count)}"
                    )
                cache.append(got)
            return cache[0]

        bud = self.budget
        before = self.bound.clone()
        stored = bool(self.current)
        w_new, beta, gram = self.newton_removal(x_del, y_del, None if stored else load())
        after = before + beta
        out: dict[str, Any] = {
            "bound_request": Budget.total(beta),
            "bound_before": Budget.total(before),
            "budget": bud.limit,
            "c": bud.c,
            "hessian": "stored" if stored else "data pass",
        }
        if bud.fits(after):
            self.weight.copy_(w_new)
            self.bound.copy_(after)
            self.count.sub_(m)
            self.gram.copy_(gram)
            self.hessian.zero_()  # at the weights before the step: never kept (see the module notes)
            self.current.fill_(False)
            out["retrained"] = False
        else:
            x_rem, y_rem = load()
            info = self.fit(x_rem, y_rem, fresh_noise())
            out["retrained"] = True
            out["retrain_reason"] = (
                f"the request's bound {Budget.total(beta):.3g} would take the accumulated bound from "
                f"{Budget.total(before):.3g} to {Budget.total(after):.3g} > budget σε/c = {bud.limit:.3g}"
            )
            out["retrain_seconds"] = info["seconds"]
        out["bound_accumulated"] = Budget.total(self.bound)
        out["budget_remaining"] = bud.limit - out["bound_accumulated"]
        spent = 0.0 if out["retrained"] else out["bound_accumulated"] - out["bound_before"]
        out["eps_request"] = bud.c * spent / bud.sigma
        out["eps_spent"] = bud.eps_spent(self.bound)
        return out


__all__ = [
    "GAMMA",
    "Budget",
    "CertifiedHead",
    "c_of",
    "check_privacy",
    "commitment",
    "fit_logistic",
    "residual_bound",
]
