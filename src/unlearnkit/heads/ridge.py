"""`RidgeHead`: a one-vs-rest least-squares head whose deletions are exact (Sherman–Morrison–Woodbury downdates).

On embedded features ``X`` (n × D, float64, see `unlearnkit.heads.linear.embed`) and one-hot targets ``Y``
(n × K), the head is the ridge solution

    W = (XᵀX + λI)⁻¹ XᵀY          (D × K; logits of an image are x̃ᵀW),

with a fixed λ (it does not scale with n, so the head trained without some points is the same formula on the
remaining rows). The head keeps the sufficient statistics G = XᵀX and XᵀY and the inverse A⁻¹ = (G + λI)⁻¹.
Deleting the rows X_f (m × D) with targets Y_f:

* G ← G − X_fᵀX_f and XᵀY ← XᵀY − X_fᵀY_f (exact downdates of sums);
* m < D: A⁻¹ ← A⁻¹ + A⁻¹X_fᵀ (I_m − X_f A⁻¹ X_fᵀ)⁻¹ X_f A⁻¹ (Woodbury; the m × m matrix is positive definite
  because the remaining G + λI is), then checked: when (G + λI)A⁻¹ differs from the identity by more than
  `DRIFT_LIMIT` on 8 fixed ±1 probe vectors (rounding accumulated over many downdates), A⁻¹ is refactorised;
* m ≥ D (a large request): A⁻¹ is refactorised from the downdated G (Cholesky), which is cheaper than an m × m
  solve;
* W ← A⁻¹ XᵀY.

The head also keeps G per class, G_c = Σ_{i: y_i = c} x̃_i x̃_iᵀ (K × D × D; G = Σ_c G_c), and the class counts. A
request that removes every remaining point of some classes (e.g. "forget class 3") then costs O(K·D² + D³)
instead of O(m·D²): G_c ← 0 for those classes, G ← Σ_c G_c, column c of XᵀY ← 0 (exactly Σ_{i: y_i = c} x̃_i, the
only column those points touch), and A⁻¹ is refactorised. Every other request downdates the G_c of the classes it
touches and sets G ← Σ_c G_c (K·D² additions; sums of the remaining points' terms, no drift), or, for fewer
than K points, downdates G by their terms (m·D²).

The result equals the head fitted from scratch on the remaining rows up to float64 rounding (tests: max |ΔW| ≤ 1e-5
for one point, many points and a whole class): the deletion is **exact**, with no noise and no budget.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, IncompatibleError

#: Largest entry of ((G + λI)A⁻¹ − I)P (P: ±1 probes) tolerated after a Woodbury downdate before A⁻¹ is refactorised.
DRIFT_LIMIT = 1e-9


def _inverse(gram: torch.Tensor, lam: float) -> torch.Tensor:
    a = gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise IncompatibleError("the ridge system is not positive definite; use a larger lam (λ > 0)")
    return torch.cholesky_inverse(chol)


def _drift(gram: torch.Tensor, lam: float, inverse: torch.Tensor, probes: int = 8) -> float:
    """max |(G + λI)A⁻¹P − P| over a fixed ±1 probe matrix P (D × 8): O(D²) per probe, where the full check
    (G + λI)A⁻¹ − I would cost a D³ product on every deletion."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randint(0, 2, (gram.shape[0], probes), generator=gen).to(gram.dtype) * 2 - 1
    return float((gram @ (inverse @ p) + lam * (inverse @ p) - p).abs().max())


class RidgeHead(nn.Module):
    """The least-squares head and its sufficient statistics (all float64 buffers, saved with the model)."""

    kind = "ridge"
    weight: torch.Tensor
    gram: torch.Tensor
    xty: torch.Tensor
    inverse: torch.Tensor
    count: torch.Tensor
    class_gram: torch.Tensor
    class_count: torch.Tensor

    def __init__(self, num_classes: int, dim: int, lam: float = 1.0) -> None:
        super().__init__()
        if not lam > 0:
            raise ConfigError(f"lam (the ridge λ) must be > 0, got {lam}")
        self.num_classes, self.dim, self.lam = int(num_classes), int(dim), float(lam)
        f64 = torch.float64
        self.register_buffer("weight", torch.zeros(num_classes, dim, dtype=f64))
        self.register_buffer("gram", torch.zeros(dim, dim, dtype=f64))
        self.register_buffer("xty", torch.zeros(dim, num_classes, dtype=f64))
        self.register_buffer("inverse", torch.eye(dim, dtype=f64) / lam)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("class_gram", torch.zeros(num_classes, dim, dim, dtype=f64))
        self.register_buffer("class_count", torch.zeros(num_classes, dtype=torch.long))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Scores (n × K) of embedded features ``z`` (n × D)."""
        return z.to(self.weight.dtype) @ self.weight.T

    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(y.long(), self.num_classes).to(torch.float64)

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> RidgeHead:
        """Fit on embedded features ``x`` (n × D) and labels ``y`` (n,) from scratch."""
        x, y = x.to(torch.float64), y.long()
        for c in range(self.num_classes):
            xc = x[y == c]
            self.class_gram[c] = xc.T @ xc
        self.class_count.copy_(torch.bincount(y, minlength=self.num_classes))
        self.gram.copy_(self.class_gram.sum(0))
        self.xty.copy_(x.T @ self._targets(y))
        self.inverse.copy_(_inverse(self.gram, self.lam))
        self.count.fill_(len(x))
        self.weight.copy_((self.inverse @ self.xty).T)
        return self

    def remove(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float | str]:
        """Delete the rows ``x`` (m × D, embedded) with labels ``y`` exactly; returns how (woodbury | refactor |
        class: every remaining point of the classes in ``y``)."""
        x, y = x.to(torch.float64), y.long()
        m = len(x)
        if m == 0:
            raise IncompatibleError("the deletion request selects no training point")
        if m > int(self.count):
            raise IncompatibleError(f"cannot delete {m} points from a head trained on {int(self.count)}")
        per_class = torch.bincount(y, minlength=self.num_classes)
        if len(per_class) > self.num_classes or bool((per_class > self.class_count).any()):
            raise IncompatibleError("the request removes more points of a class than the head holds")
        classes = torch.nonzero(per_class).flatten().tolist()
        whole = bool(torch.equal(per_class[classes], self.class_count[classes]))
        if whole:
            for c in classes:
                self.class_gram[c].zero_()
                self.xty[:, c].zero_()
        else:
            xs = x[torch.argsort(y, stable=True)] if len(classes) > 1 else x  # rows grouped by class
            start = 0
            for c in classes:
                xc = xs[start : start + int(per_class[c])]
                start += len(xc)
                self.class_gram[c].sub_(xc.T @ xc)
        if whole or m >= self.num_classes:
            self.gram.copy_(self.class_gram.sum(0))  # the remaining points' terms summed again: no drift
        else:
            self.gram.sub_(x.T @ x)  # a few points: m·D² instead of K·D²
        if not whole:
            self.xty.sub_(x.T @ self._targets(y))
        self.class_count.sub_(per_class)
        how = "class" if whole else "refactor"
        if not whole and m < self.dim:
            ax = self.inverse @ x.T  # D × m
            inner = torch.eye(m, dtype=x.dtype) - x @ ax
            chol, info = torch.linalg.cholesky_ex(inner)
            if int(info) == 0:
                new = self.inverse + ax @ torch.cholesky_solve(ax.T, chol)
                if _drift(self.gram, self.lam, new) <= DRIFT_LIMIT:
                    self.inverse.copy_(new)
                    how = "woodbury"
        if how != "woodbury":
            self.inverse.copy_(_inverse(self.gram, self.lam))
        self.count.sub_(m)
        self.weight.copy_((self.inverse @ self.xty).T)
        return {"update": how}


__all__ = ["DRIFT_LIMIT", "RidgeHead"]
