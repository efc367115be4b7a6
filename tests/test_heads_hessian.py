"""The certified head's stored Hessian (issue 29): a removal reads only the removed points while the Hessian of the
remaining data at the current weights is kept, its Newton step and bound are the data pass's, a Hessian at older
weights is never kept, and a one-image deletion through the backbone touches no other image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from unlearnkit.errors import IncompatibleError
from unlearnkit.heads import CertifiedHead, embed, extract_features, load_head, save_head, train_head


def _problem(n: int = 240, d: int = 10, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    f = torch.randn(n, d, generator=g) + 2.0 * torch.nn.functional.one_hot(y, d).float()
    return embed(f), y


def _head(x: torch.Tensor, y: torch.Tensor) -> CertifiedHead:
    head = CertifiedHead(3, x.shape[1], lam=1e-2, sigma=1.0, eps=1.0, delta=1e-5)
    head.fit(x, y, head.draw_noise(torch.Generator().manual_seed(1)))
    return head


def _keep(n: int, gone: list[int]) -> torch.Tensor:
    alive = torch.ones(n, dtype=torch.bool)
    alive[gone] = False
    return alive


@pytest.mark.parametrize("drop", [[5], [0, 17, 33, 90, 91]])
def test_stored_hessian_step_equals_the_data_pass_step(drop: list[int]) -> None:
    x, y = _problem()
    head = _head(x, y)
    alive = _keep(len(x), drop)
    stored = head.newton_removal(x[drop], y[drop])
    data = head.newton_removal(x[drop], y[drop], (x[alive], y[alive]))
    w_s, beta_s, gram_s = stored
    w_d, beta_d, gram_d = data
    assert float((w_s - head.weight).abs().max()) > 1e-5  # the step is not trivially zero
    torch.testing.assert_close(w_s, w_d, rtol=0, atol=1e-11)
    torch.testing.assert_close(beta_s, beta_d, rtol=1e-7, atol=0)
    torch.testing.assert_close(gram_s, gram_d, rtol=0, atol=1e-10)


def test_newton_step_clears_the_hessian_and_refresh_restores_the_stored_path() -> None:
    x, y = _problem()
    head = _head(x, y)
    assert bool(head.current) and float(head.hessian.abs().max()) > 0
    noise: Any = lambda: head.draw_noise(torch.Generator().manual_seed(9))  # noqa: E731
    first = head.remove(x[3:4], y[3:4], noise)  # no remaining rows given: the stored path
    assert first["hessian"] == "stored" and not first["retrained"]
    # the Hessian at the weights before the step is never kept (it would reveal them and so the step)
    assert not bool(head.current) and float(head.hessian.abs().max()) == 0.0
    alive = _keep(len(x), [3, 40])
    with pytest.raises(IncompatibleError, match="remaining points' features"):
        head.remove(x[40:41], y[40:41], noise)
    # the fallback: the data pass gives the same step as the stored path after a refresh at the new weights
    twin = CertifiedHead(3, x.shape[1], lam=1e-2, sigma=1.0, eps=1.0, delta=1e-5)
    twin.load_state_dict(head.state_dict())
    fallback = twin.remove(x[40:41], y[40:41], noise, remaining=(x[alive], y[alive]))
    head.refresh(x[_keep(len(x), [3])])
    assert bool(head.current)
    fast = head.remove(x[40:41], y[40:41], noise)
    assert fallback["hessian"] == "data pass" and fast["hessian"] == "stored"
    torch.testing.assert_close(head.weight, twin.weight, rtol=0, atol=1e-11)
    torch.testing.assert_close(head.bound, twin.bound, rtol=1e-7, atol=0)
    torch.testing.assert_close(head.gram, x[alive].T @ x[alive], rtol=0, atol=1e-10)  # the Gram is downdated


def test_one_image_deletion_touches_no_other_image_and_the_checkpoint_holds_no_stale_hessian(tmp_path: Path) -> None:
    from unlearnkit.testing import tiny_bundle, tiny_model

    b = tiny_bundle()
    model = train_head(
        tiny_model(trained=True), b.train, head="certified", trained_on="public", indices=range(64, 128),
        cache=False, lam=0.05, sigma=20.0, noise_seed=3,
    )  # fmt: skip
    seen: list[int] = []
    model.backbone.register_forward_hook(lambda _m, inp, _out: seen.append(len(inp[0])))
    rep = model.delete(b.train, [70], refresh=False)
    assert sum(seen) == 1 and rep.hessian == "stored" and rep.update == "newton"
    save_head(model, tmp_path / "h.safetensors")
    back = load_head(tmp_path / "h.safetensors").head
    assert isinstance(back, CertifiedHead)
    assert not bool(back.current) and float(back.hessian.abs().max()) == 0.0
    # not current: the next deletion reads the 62 remaining images once (its data-pass step and the refresh)
    seen.clear()
    rep = model.delete(b.train, [71])
    assert rep.hessian == "data pass" and sum(seen) == 1 + 62 and rep.refresh_seconds > 0
    seen.clear()
    rep = model.delete(b.train, [72], refresh=False)  # refreshed: reads only its own image again
    assert sum(seen) == 1 and rep.hessian == "stored"
    retrained = train_head(
        tiny_model(trained=True), b.train, head="certified", trained_on="public", cache=False,
        indices=[i for i in range(64, 128) if i not in (70, 71, 72)], lam=0.05, sigma=20.0, noise_seed=3,
    )  # fmt: skip
    gap = float((model.head.weight - retrained.head.weight).norm())
    moved = float((model.head.weight - train_head(
        tiny_model(trained=True), b.train, head="certified", trained_on="public", cache=False,
        indices=range(64, 128), lam=0.05, sigma=20.0, noise_seed=3,
    ).head.weight).norm())  # fmt: skip
    assert gap < 0.1 * moved, (gap, moved)


def test_head_method_refreshes_after_the_step_so_the_next_request_reads_only_its_images() -> None:
    import numpy as np

    from unlearnkit.data.splits import Split
    from unlearnkit.methods import UnlearnData, create_method
    from unlearnkit.methods.base import RunContext
    from unlearnkit.testing import tiny_bundle, tiny_model

    b = tiny_bundle()
    model = train_head(
        tiny_model(trained=True), b.train, head="certified", trained_on="same", cache=False,
        lam=0.05, sigma=20.0, noise_seed=3,
    )  # fmt: skip
    seen: list[int] = []
    model.backbone.register_forward_hook(lambda _m, inp, _out: seen.append(len(inp[0])))
    alive = np.arange(len(b.train))
    for forget in ([5, 9], [40]):
        retain = np.setdiff1d(alive, forget)
        split = Split("synthetic", "custom", 0, np.asarray(forget), retain, np.arange(len(b.test)), len(b.train))
        seen.clear()
        out = create_method("head").unlearn(model, UnlearnData.from_split(b, split), RunContext("cpu", 0))
        assert out is model
        rep = model.last_deletion
        assert rep is not None and rep.hessian == "stored" and rep.refresh_seconds > 0
        # the step read the forget images; the refresh after it the remaining ones (for the next request)
        assert sum(seen) == len(forget) + len(retain), (seen, forget)
        alive = retain
    assert isinstance(model.head, CertifiedHead) and bool(model.head.current)


def test_refresh_reads_the_feature_cache_filled_at_training_not_the_backbone() -> None:
    from unlearnkit.testing import tiny_bundle, tiny_model

    b = tiny_bundle()
    model = train_head(
        tiny_model(trained=True), b.train, head="certified", trained_on="public", indices=range(32, 128),
        cache=True, lam=0.05, sigma=20.0, noise_seed=4,
    )  # fmt: skip
    seen: list[int] = []
    model.backbone.register_forward_hook(lambda _m, inp, _out: seen.append(len(inp[0])))
    rep = model.delete(b.train, [40, 41])
    assert rep.hessian == "stored" and rep.refresh_seconds > 0 and sum(seen) == 2  # the rest came from the cache
    head = model.head
    assert isinstance(head, CertifiedHead)
    keep = torch.tensor([i for i in range(32, 128) if i not in (40, 41)])
    x_rem, _ = extract_features(model.backbone, b.train.subset(keep.numpy()), cache=False)
    torch.testing.assert_close(head.hessian, head._hessians(x_rem), rtol=0, atol=1e-10)  # at the new weights
