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


class CertifiedHead(nn.Module):
    """The K logistic heads, their accumulated per-class residual bounds and the count of training points."""

    kind = "certified"
    weight: torch.Tensor
    bound: torch.Tensor
    count: torch.Tensor

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
        self.register_buffer("weight", torch.zeros(num_classes, dim, dtype=torch.float64))
        self.register_buffer("bound", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """One-vs-rest log-odds (n × K) of embedded features ``z``."""
        return z.to(self.weight.dtype) @ self.weight.T

    def draw_noise(self, generator: torch.Generator) -> torch.Tensor:
        """b ~ N(0, σ²I) for all K heads (K × D)."""
        return torch.randn(self.num_classes, self.dim, generator=generator, dtype=torch.float64) * self.budget.sigma

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
        return {"train_residual": float(residual.norm()), "seconds": time.perf_counter() - t0}

    def newton_removal(
        self, x_rem: torch.Tensor, y_rem: torch.Tensor, x_del: torch.Tensor, y_del: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(w⁻, β): the Newton-updated weights (K × D) and the per-class residual bounds of this removal."""
        x_rem, x_del = x_rem.to(torch.float64), x_del.to(torch.float64)
        m, n_rem = len(x_del), len(x_rem)
        w = self.weight
        s_del = signs(y_del, self.num_classes)
        z_del = x_del @ w.T
        delta = self.lam * m * w + (-s_del * torch.sigmoid(-s_del * z_del)).T @ x_del  # K × D
        steps = torch.empty_like(w)
        for k in range(self.num_classes):
            h = _hessian(x_rem, w[k], 1.0, self.lam * n_rem)
            chol = torch.linalg.cholesky(h)
            steps[k] = torch.cholesky_solve(delta[k][:, None], chol)[:, 0]
        x_norm = math.sqrt(max(float(torch.linalg.eigvalsh(x_rem.T @ x_rem)[-1]), 0.0))
        beta = GAMMA * x_norm * steps.norm(dim=1) * (x_rem @ steps.T).norm(dim=0)
        return w + steps, beta

    def remove(
        self,
        x_rem: torch.Tensor,
        y_rem: torch.Tensor,
        x_del: torch.Tensor,
        y_del: torch.Tensor,
        fresh_noise: Callable[[], torch.Tensor],
    ) -> dict[str, Any]:
        """Remove the rows ``x_del`` given the remaining rows ``x_rem``: a Newton step while the budget lasts,
        else a retrain on the remaining rows with ``fresh_noise()``. Returns the request's accounting."""
        m = len(x_del)
        if m == 0:
            raise IncompatibleError("the deletion request selects no training point")
        if len(x_rem) + m != int(self.count):
            raise IncompatibleError(
                f"{len(x_rem)} remaining + {m} removed points, but the head was trained on {int(self.count)}"
            )
        if len(x_rem) == 0:
            raise IncompatibleError("the request would remove every training point of the head; nothing to train on")
        bud = self.budget
        before = self.bound.clone()
        w_new, beta = self.newton_removal(x_rem, y_rem, x_del, y_del)
        after = before + beta
        out: dict[str, Any] = {
            "bound_request": Budget.total(beta),
            "bound_before": Budget.total(before),
            "budget": bud.limit,
            "c": bud.c,
        }
        if bud.fits(after):
            self.weight.copy_(w_new)
            self.bound.copy_(after)
            self.count.fill_(len(x_rem))
            out["retrained"] = False
        else:
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


__all__ = ["GAMMA", "Budget", "CertifiedHead", "c_of", "check_privacy", "commitment", "fit_logistic"]
