"""L-CODEC: a Newton removal step on the few parameters a conditional-independence test (FOCI) selects."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..data.datasets import ImageDataset
from ..data.loading import as_image_dataset, iter_batches
from ..errors import DivergenceError
from . import register
from ._common import concat_images
from .base import MethodConfig, RunContext, UnlearnData
from .one_shot import OneShotMethod


@dataclass(frozen=True, kw_only=True)
class LCodecConfig(MethodConfig):
    """Hyper-parameters of `LCodec` (defaults: the authors' CIFAR-10 scrub script, methods.md §12.6).

    Args:
        perturbations: P, noisy copies of each request used for the selection (1,000).
        perturb_std: standard deviation of the input perturbation (0.1, on [0, 1] pixels).
        scrub_batch_size: forget samples per deletion request; requests are removed one after another (32).
        max_slices: [OURS] at most this many slices (filters/units) selected per request (None: FOCI decides).
        max_params: [OURS] parameter budget of the selected subset; FOCI stops before exceeding it (4,096 entries:
            a 4,096² float64 Hessian is 134 MB).
        candidate_layers: [OURS] only the last this-many Conv2d/Linear layers are candidates (None: all).
        hessian: ``fd`` (rank-1 finite differences, the reference) or ``exact`` (the exact Hessian of the subset,
            by forward-over-reverse autodiff; affordable for a few hundred parameters only).
        fd_lr: step of the finite-difference gradient evaluations (1e-3).
        hessian_samples: [OURS] random training samples (retain ∪ remaining forget) for the full-data gradients
            and Hessian; None: all of them.
        l2_reg: λ, the damping of ``H + λI`` (0.01).
        psd_guard: [OURS] project ``H`` onto the positive semi-definite matrices (negative eigenvalues set to 0)
            before adding ``λI``, so the Newton step is at most ``(m/(n−m))·‖g‖/λ`` (True). The reference solves
            with ``H`` as it is (False): with the FD Hessians ``H = (n·H_all − m·H_req)/(n − m)`` is a difference
            of rank-1 matrices, so ``H + λI`` can have eigenvalues near 0 or below it and the step explodes.
        add_noise: add the certified-removal Gaussian noise to the updated entries.
        epsilon, delta, noise_M, noise_L, noise_m: ε, δ, M, L, m of ``σ`` (0.1, 0.01, 0.25, 1, 1).
        batch_size: batch of the gradient and activation passes (256).
    """

    perturbations: int = 1000
    perturb_std: float = 0.1
    scrub_batch_size: int = 32
    max_slices: int | None = None
    max_params: int = 4096
    candidate_layers: int | None = None
    hessian: Literal["fd", "exact"] = "fd"
    fd_lr: float = 1e-3
    hessian_samples: int | None = None
    l2_reg: float = 0.01
    psd_guard: bool = True
    add_noise: bool = True
    epsilon: float = 0.1
    delta: float = 0.01
    noise_M: float = 0.25
    noise_L: float = 1.0
    noise_m: float = 1.0
    batch_size: int = 256

    def validate(self) -> None:
        super().validate()
        self.check(self.perturbations >= 3, f"perturbations must be ≥ 3, got {self.perturbations}")
        self.check(self.perturb_std >= 0, f"perturb_std must be ≥ 0, got {self.perturb_std}")
        self.check(self.scrub_batch_size >= 1, f"scrub_batch_size must be ≥ 1, got {self.scrub_batch_size}")
        self.check(self.max_slices is None or self.max_slices >= 1, f"max_slices must be ≥ 1, got {self.max_slices}")
        self.check(self.max_params >= 1, f"max_params must be ≥ 1, got {self.max_params}")
        self.check(
            self.candidate_layers is None or self.candidate_layers >= 1,
            f"candidate_layers must be ≥ 1, got {self.candidate_layers}",
        )
        self.check(self.hessian in ("fd", "exact"), f"hessian must be 'fd' or 'exact', got {self.hessian!r}")
        self.check(self.fd_lr > 0, f"fd_lr must be > 0, got {self.fd_lr}")
        self.check(
            self.hessian_samples is None or self.hessian_samples >= 1,
            f"hessian_samples must be ≥ 1, got {self.hessian_samples}",
        )
        self.check(self.l2_reg > 0, f"l2_reg (λ) must be > 0, got {self.l2_reg}")
        self.check(self.epsilon > 0 and 0 < self.delta < 1, "epsilon must be > 0 and delta in (0, 1)")
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")


# ------------------------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class Slice:
    """One output unit of a layer: a Conv2d filter or a Linear unit (its weight row and bias entry)."""

    module: str
    index: int


def candidate_modules(model: nn.Module, last: int | None = None) -> list[tuple[str, nn.Module]]:
    """Conv2d and Linear layers in module order (the last ``last`` of them when given)."""
    mods: list[tuple[str, nn.Module]] = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    return mods[-last:] if last else mods


@torch.no_grad()
def perturbation_statistics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    modules: list[tuple[str, nn.Module]],
    *,
    perturbations: int,
    std: float,
    generator: torch.Generator,
    chunk_images: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor, list[Slice]]:
    """``(A, loss, slices)``: for ``P`` noisy copies ``x + std·N(0, I)`` of the request, the slice activations
    ``A`` (P, S) (Conv2d outputs averaged over batch and space, Linear outputs over the batch) and the mean
    loss ``ℓ`` (P,). The model is used as it is (call ``eval()`` first)."""
    m = len(x)
    store: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def fn(_: nn.Module, __: Any, out: torch.Tensor) -> None:
            k = out.shape[0] // m
            o = out.reshape(k, m, *out.shape[1:])
            store[name] = o.mean(dim=(1, *range(3, o.ndim))) if o.ndim > 3 else o.mean(1)

        return fn

    handles = [mod.register_forward_hook(hook(name)) for name, mod in modules]
    acts: list[torch.Tensor] = []
    losses: list[torch.Tensor] = []
    per = max(1, chunk_images // m)
    try:
        for start in range(0, perturbations, per):
            k = min(per, perturbations - start)
            noise = torch.randn((k, *x.shape), generator=generator).to(x.device)
            xs = (x[None] + std * noise).reshape(k * m, *x.shape[1:])
            logits = model(xs)
            ce = F.cross_entropy(logits, y.repeat(k), reduction="none").reshape(k, m).mean(1)
            losses.append(ce)
            acts.append(torch.cat([store[name].reshape(k, -1) for name, _ in modules], dim=1))
    finally:
        for h in handles:
            h.remove()
    slices: list[Slice] = []
    for name, mod in modules:
        n_out = int(mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features)  # type: ignore[arg-type]
        slices.extend(Slice(name, j) for j in range(n_out))
    return torch.cat(acts).double(), torch.cat(losses).double(), slices


def _ranks(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``R_i = #{j: y_j ≤ y_i}`` and ``L_i = #{j: y_j ≥ y_i}``."""
    ys = torch.sort(y).values
    r = torch.searchsorted(ys, y, right=True).double()
    lo = (len(y) - torch.searchsorted(ys, y, right=False)).double()
    return r, lo


def codec_q(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Azadkia–Chatterjee ``Q_n(Y, X) = n⁻² Σ_i (min(R_i, R_{N(i)}) − L_i²/n)`` for each candidate set.

    ``x`` is (n, d) for one set or (c, n, d) for ``c`` candidate sets; ``N(i)`` is the nearest neighbour of
    ``X_i`` (Euclidean, ``j ≠ i``, the first index on ties).
    """
    batched = x.ndim == 3
    xb = x if batched else x[None]
    n = len(y)
    r, lo = _ranks(y)
    dist = torch.cdist(xb, xb)
    dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    nn_idx = dist.argmin(dim=2)  # c, n
    q = (torch.minimum(r[None, :], r[nn_idx]) - lo[None, :] ** 2 / n).sum(1) / n**2
    return q if batched else q[0]


def foci(y: torch.Tensor, x: torch.Tensor, *, max_select: int | None = None, chunk: int = 32) -> list[int]:
    """FOCI forward stepwise selection (Azadkia & Chatterjee 2021) of the columns of ``x`` (n, p) for ``y``.

    Adds the column that maximises ``Q_n(Y, X_{S∪{j}})`` while that exceeds ``Q_n(Y, X_S)`` (``Q_n(∅) = 0``);
    columns are standardised first, and constant ones are never candidates.
    """
    std = x.std(0)
    ok = std > 1e-12
    # Standardised float32 columns: the nearest-neighbour searches dominate the cost (P² per candidate).
    xs = ((x - x.mean(0)) / torch.where(ok, std, torch.ones_like(std))).float()
    chosen: list[int] = []
    q_prev = 0.0
    limit = max_select or x.shape[1]
    while len(chosen) < limit:
        cand = [j for j in range(x.shape[1]) if ok[j] and j not in chosen]
        if not cand:
            break
        best_q, best_j = -math.inf, -1
        base = xs[:, chosen]
        for start in range(0, len(cand), chunk):
            cols = cand[start : start + chunk]
            sets = torch.cat([base[None].expand(len(cols), -1, -1), xs[:, cols].T[:, :, None]], dim=2)
            q = codec_q(y, sets)
            i = int(q.argmax())
            if float(q[i]) > best_q:
                best_q, best_j = float(q[i]), cols[i]
        if best_q <= q_prev:
            break
        chosen.append(best_j)
        q_prev = best_q
    return chosen


def slice_masks(model: nn.Module, slices: list[Slice]) -> dict[str, torch.Tensor]:
    """Boolean masks over the parameters for the selected slices: the unit's weight row and bias entry."""
    params = dict(model.named_parameters())
    masks: dict[str, torch.Tensor] = {}
    for s in slices:
        for kind in ("weight", "bias"):
            name = f"{s.module}.{kind}" if s.module else kind
            if name in params and params[name].requires_grad:
                mask = masks.setdefault(name, torch.zeros_like(params[name], dtype=torch.bool))
                mask[s.index] = True
    return masks


def slice_size(model: nn.Module, s: Slice) -> int:
    return sum(int(m.sum()) for m in slice_masks(model, [s]).values())


# ------------------------------------------------------------------------------------------ the Newton step
class SubsetLoss:
    """The mean cross-entropy as a function of the selected entries ``w`` (flat, in parameter order)."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.model = model
        self.names = [n for n, _ in model.named_parameters() if n in masks]
        params = dict(model.named_parameters())
        self.base = {n: p.detach() for n, p in params.items()}
        self.index = {n: masks[n].reshape(-1).nonzero().squeeze(1) for n in self.names}
        self.buffers = dict(model.named_buffers())

    def w0(self) -> torch.Tensor:
        return torch.cat([self.base[n].reshape(-1)[self.index[n]] for n in self.names]).double()

    def __call__(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        params = dict(self.base)
        offset = 0
        for n in self.names:
            idx = self.index[n]
            p = self.base[n]
            flat = p.reshape(-1).index_put((idx,), w[offset : offset + len(idx)].to(p.dtype))
            params[n] = flat.reshape(p.shape)
            offset += len(idx)
        return F.cross_entropy(functional_call(self.model, (params, self.buffers), (x,)), y)

    def grad(self, w: torch.Tensor, ds: ImageDataset, batch_size: int, device: torch.device) -> torch.Tensor:
        """Gradient of the mean loss over ``ds`` at ``w`` (float64)."""
        total = torch.zeros_like(w)
        for x, y in iter_batches(ds, batch_size, device=device):
            wi = w.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self(wi, x, y), wi)
            total += g.double() * len(y)
        return total / len(ds)

    def hessian(self, w: torch.Tensor, ds: ImageDataset, batch_size: int, device: torch.device) -> torch.Tensor:
        """Exact Hessian of the mean loss over ``ds`` at ``w`` (float64), forward-over-reverse."""
        from torch.func import hessian

        total = torch.zeros(len(w), len(w), dtype=torch.float64, device=w.device)
        for x, y in iter_batches(ds, batch_size, device=device):
            total += hessian(lambda v, x=x, y=y: self(v, x, y))(w.detach()).double() * len(y)
        return total / len(ds)


def fd_hessian(g1: torch.Tensor, g2: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``(g1 − g2)(g1 − g2)ᵀ / ‖w1 − w2‖₁`` (rank 1; zero when the points coincide)."""
    dg = g1 - g2
    norm = float((w1 - w2).abs().sum())
    return torch.outer(dg, dg) / norm if norm > 0 else torch.zeros(len(dg), len(dg), dtype=dg.dtype, device=dg.device)


def noise_sigma(n: int, *, l2_reg: float, epsilon: float, delta: float, M: float, L: float, m: float) -> float:
    """``σ = (γ/ε)·sqrt(2·ln(1.25/δ))`` with ``γ = 2·M·L²·m² / (n²·λ³)`` (Sekhari-style certified removal)."""
    gamma = 2 * M * L**2 * m**2 / (n**2 * l2_reg**3)
    return gamma / epsilon * math.sqrt(2 * math.log(1.25 / delta))


def newton_delta(
    h_all: torch.Tensor,
    h_req: torch.Tensor,
    g_req: torch.Tensor,
    n: int,
    m: int,
    l2_reg: float,
    *,
    psd_guard: bool = False,
) -> torch.Tensor:
    """``(m/(n−m)) · (H + λI)⁻¹ g`` with ``H = (n·H_all − m·H_req)/(n − m)``: the Newton step from the optimum
    of the mean loss over ``n`` samples to that over the ``n − m`` that remain (``m = 1``: the spec's rule).

    ``psd_guard``: replace ``H`` by its positive semi-definite part ``V·diag(max(e, 0))·Vᵀ`` (``H = V·diag(e)·Vᵀ``)
    first, so ``H + λI ⪰ λI`` and ``‖step‖ ≤ (m/(n−m))·‖g‖/λ``; without it (the reference) an indefinite ``H``
    makes ``H + λI`` near-singular or indefinite and the step arbitrarily large."""
    h = (n * h_all - m * h_req) / (n - m)
    if psd_guard:
        e, v = torch.linalg.eigh((h + h.T) / 2)
        return (m / (n - m)) * (v @ ((v.T @ g_req) / (e.clamp_min(0) + l2_reg)))
    eye = torch.eye(len(g_req), dtype=h.dtype, device=h.device)
    return (m / (n - m)) * torch.linalg.solve(h + l2_reg * eye, g_req)


# ----------------------------------------------------------------------------------------------- method
class _Requests(NamedTuple):
    forget: ImageDataset
    retain: ImageDataset
    order: torch.Tensor
    requests: list[ImageDataset]


@register("lcodec", aliases=("l_codec",))
class LCodec(OneShotMethod[_Requests]):
    """L-CODEC: conditionally independent Hessian-based removal on a FOCI-selected parameter subset.

    Paper:
        Mehta, Pal, Singh, Ravi, "Deep Unlearning via Randomized Conditionally Independent Hessians", CVPR 2022,
        https://arxiv.org/abs/2204.07655 (methods.md §12.6)

    The forget set is removed in requests of ``scrub_batch_size`` samples, one after another (the paper
    removes single samples; a batch request is our generalisation, exact for ``m = 1``). Per request
    ``(x, y)`` of ``m`` samples, model in ``eval()`` mode:

    1. ``P`` perturbations ``x + 0.1·N(0, I)``: slice activations (Conv2d filter outputs averaged over batch
       and space, Linear units over the batch) and the loss.
    2. FOCI forward selection of slices by the Azadkia–Chatterjee coefficient ``T_n(loss; slice | chosen)``,
       stopped when the best gain ≤ 0 (or at ``max_slices`` / ``max_params``). Selected parameters ``w_s``: each
       slice's weight row and bias entry.
    3. Hessians on ``w_s`` (``hessian="fd"``, the reference): ``H_FD = (g1 − g2)(g1 − g2)ᵀ/‖w1 − w2‖₁``.
       ``H_all`` from the full-data gradient at ``w`` and after one gradient step of ``fd_lr`` on it;
       ``H_req`` from the request's gradient before and after one SGD step of ``fd_lr`` on the request.
       ``hessian="exact"`` uses the exact Hessians instead.
    4. Newton step: ``w_s ← w_s + (m/(n − m))·(H + λI)⁻¹ g_req`` with ``H = (n·H_all − m·H_req)/(n − m)``
       and ``n`` the current training-set size (``m = 1``: the spec's ``(1/(n−1))·(H + λI)⁻¹ g``).
    5. Noise: ``w_s ← w_s + N(0, σ²I)``, ``σ = (γ/ε)·sqrt(2·ln(1.25/δ))``, ``γ = 2·M·L²·m²/(n²·λ³)``.
       Then ``n ← n − m``.

    Guards [OURS]: with the FD Hessians ``H`` is a difference of two rank-1 matrices, so ``H + λI`` can be
    indefinite or near-singular and the reference solve can return an arbitrarily large step; once an earlier
    step (or a σ far above the weights, see below) has wrecked the model the gradients blow up, the steps
    overflow and the weights turn NaN. ``psd_guard=True`` (default) solves with the positive semi-definite
    part of ``H`` (negative eigenvalues set to 0), which bounds the step by ``(m/(n−m))·‖g‖/λ`` and equals the
    reference wherever ``H`` is PSD; ``psd_guard=False`` is the reference solve. A non-finite step raises
    `DivergenceError` instead of being written into the model. σ ∝ 1/(n²·ε) is calibrated for CIFAR-10
    (n = 50,000: σ ≈ 6e-3); on a small training set it exceeds the weights themselves (digits: 8.6), which a
    `RuntimeWarning` reports: raise ``epsilon`` there (the digits preset does).

    Training-time artefacts: the paper reuses the full-data gradients saved at the last two training epochs;
    we have none, so the full-data gradients are computed on the retain set plus the forget samples not yet
    removed (``hessian_samples`` of them, all by default). That is why this method reads the retain set.

    Cost (honest): per request, ``P`` forward passes of ``m`` images (P·m images: 32,000 by default), a
    FOCI over all slices (each step ``#slices`` nearest-neighbour searches among ``P`` points, ``O(P²)`` each,
    so about ``#selected · #slices · P²`` operations), four gradient passes (two over the full data) and an
    ``s × s`` solve (``s ≤ max_params``). On digits × small_cnn (378 slices) a 32-sample request takes a few
    seconds on a CPU; a class of 4,500 images is 140 requests. The step only touches a few units, so expect
    weak forgetting of a whole class: the method targets small deletions (random samples).

    Requires:
        forget set with labels and the retain set (full-data gradients, see above); random or class-wise.

    Example:
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> from unlearnkit.methods import create_method
        >>> out = create_method("lcodec", perturbations=50).unlearn(tiny_model(trained=True), tiny_data("random:0.1"))
    """

    Config: ClassVar[type[LCodecConfig]] = LCodecConfig
    paper: ClassVar[str | None] = (
        "Deep Unlearning via Randomized Conditionally Independent Hessians (CVPR 2022), https://arxiv.org/abs/2204.07655"
    )
    summary: ClassVar[str] = "one-shot: Newton removal step on a FOCI-selected parameter subset, plus noise"
    smoke_config: ClassVar[dict[str, Any]] = {"perturbations": 64, "scrub_batch_size": 64, "max_params": 512}

    def select(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: RunContext) -> list[Slice]:
        """FOCI-selected slices for the request ``(x, y)``, within ``max_slices`` and ``max_params``."""
        c = self.config
        mods = candidate_modules(model, c.candidate_layers)
        acts, losses, slices = perturbation_statistics(
            model, x, y, mods, perturbations=c.perturbations, std=c.perturb_std, generator=ctx.rng
        )
        order = foci(losses, acts, max_select=c.max_slices)
        chosen, size = [], 0
        for j in order:
            k = slice_size(model, slices[j])
            if size + k > c.max_params:
                break
            chosen.append(slices[j])
            size += k
        return chosen

    def remove(
        self,
        model: nn.Module,
        masks: dict[str, torch.Tensor],
        request: ImageDataset,
        full: ImageDataset,
        n: int,
        ctx: RunContext,
    ) -> torch.Tensor:
        """Apply the Newton step (and noise) for ``request`` to the entries in ``masks``; return the step."""
        c = self.config
        f = SubsetLoss(model, masks)
        w = f.w0()
        m = len(request)
        g_req = f.grad(w, request, c.batch_size, ctx.device)
        if c.hessian == "exact":
            h_all = f.hessian(w, full, c.batch_size, ctx.device)
            h_req = f.hessian(w, request, c.batch_size, ctx.device)
        else:
            g_all = f.grad(w, full, c.batch_size, ctx.device)
            w_all = w - c.fd_lr * g_all
            h_all = fd_hessian(g_all, f.grad(w_all, full, c.batch_size, ctx.device), w, w_all)
            w_req = w - c.fd_lr * g_req
            h_req = fd_hessian(g_req, f.grad(w_req, request, c.batch_size, ctx.device), w, w_req)
        step = newton_delta(h_all, h_req, g_req, n, m, c.l2_reg, psd_guard=c.psd_guard)
        new = w + step
        if c.add_noise:
            sigma = noise_sigma(
                n, l2_reg=c.l2_reg, epsilon=c.epsilon, delta=c.delta, M=c.noise_M, L=c.noise_L, m=c.noise_m
            )
            new = new + sigma * torch.randn(len(w), generator=ctx.rng, dtype=torch.float64).to(w.device)
        if not torch.isfinite(new).all():
            # Never write NaN/inf into the model: say where it came from instead of returning a broken model.
            raise DivergenceError(
                f"`lcodec` diverged: the Newton step on {len(w)} selected entries is not finite (‖g‖ = "
                f"{float(g_req.norm()):.3g}, n = {n}). Keep psd_guard=True, raise l2_reg, or lower the noise "
                "(epsilon up / add_noise=false) if an earlier request's noise wrecked the model."
            )
        params = dict(model.named_parameters())
        offset = 0
        with torch.no_grad():
            for name in f.names:
                idx = f.index[name]
                p = params[name]
                flat = p.detach().reshape(-1).clone()
                flat[idx] = new[offset : offset + len(idx)].to(p.dtype)
                p.copy_(flat.view_as(p))
                offset += len(idx)
        return step

    def prepare(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> _Requests:
        """The forget set in a random order, cut into the removal requests of ``scrub_batch_size`` samples."""
        c = self.config
        model.eval()
        assert data.retain is not None  # requires.retain, checked before compute
        forget = as_image_dataset(data.forget)
        order = torch.randperm(len(forget), generator=ctx.rng)
        requests = [
            forget.subset(order[i : i + c.scrub_batch_size].numpy()) for i in range(0, len(forget), c.scrub_batch_size)
        ]
        return _Requests(forget, as_image_dataset(data.retain), order, requests)

    def edit(self, model: nn.Module, data: UnlearnData, prepared: _Requests, ctx: RunContext) -> nn.Module:
        c = self.config
        forget, retain, order, requests = prepared
        n = len(retain) + len(forget)
        if c.add_noise:
            _warn_if_noise_dominates(model, c, n)
        removed = 0
        for req in requests:
            # The training data still held: retain plus the forget samples not yet removed (this request included).
            rest = order[removed:].numpy()
            full = _concat(retain, forget.subset(rest))
            if c.hessian_samples is not None and c.hessian_samples < len(full):
                full = full.subset(torch.randperm(len(full), generator=ctx.rng)[: c.hessian_samples].numpy())
            x, y = next(iter_batches(req, len(req), device=ctx.device))
            slices = self.select(model, x, y, ctx)
            if slices and n - len(req) >= 1:
                self.remove(model, slice_masks(model, slices), req, full, n, ctx)
            ctx.log(selected=len(slices), parameters=sum(slice_size(model, s) for s in slices))
            n -= len(req)
            removed += len(req)
        model.eval()
        return model


def _warn_if_noise_dominates(model: nn.Module, c: LCodecConfig, n: int) -> None:
    """Warn when the certified-removal σ (∝ 1/n²) exceeds the RMS of the candidate weights: the noise then
    replaces the selected units rather than masking them (digits, n = 1,347: σ = 8.6 with the CIFAR-10 ε)."""
    sigma = noise_sigma(n, l2_reg=c.l2_reg, epsilon=c.epsilon, delta=c.delta, M=c.noise_M, L=c.noise_L, m=c.noise_m)
    weights = [
        mod.weight.detach().reshape(-1)
        for _, mod in candidate_modules(model, c.candidate_layers)
        if isinstance(mod.weight, torch.Tensor)
    ]
    rms = float(torch.cat(weights).double().pow(2).mean().sqrt()) if weights else 0.0
    if sigma > rms:
        warnings.warn(
            f"lcodec: the removal noise σ = {sigma:.3g} (n = {n}, ε = {c.epsilon:g}, λ = {c.l2_reg:g}) exceeds the "
            f"RMS {rms:.3g} of the weights it is added to, so it will overwrite the selected units; σ ∝ 1/(n²·ε): "
            "raise epsilon for a small training set (the digits preset does) or set add_noise=false.",
            RuntimeWarning,
            stacklevel=4,  # the caller of unlearn (through edit and OneShotMethod.unlearn)
        )


def _concat(a: ImageDataset, b: ImageDataset) -> ImageDataset:
    return ImageDataset(concat_images(a.images, b.images), torch.cat([a.targets, b.targets]))


__all__ = [
    "LCodec",
    "LCodecConfig",
    "Slice",
    "SubsetLoss",
    "codec_q",
    "fd_hessian",
    "foci",
    "newton_delta",
    "noise_sigma",
    "perturbation_statistics",
    "slice_masks",
]
