"""Phase mechanics of the shared loop: partner streams, per-phase learning rate, fresh optimizer, phase-start hook."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch.nn import functional as F

from unlearnkit.data.datasets import ImageDataset
from unlearnkit.data.loading import cycle_batches
from unlearnkit.errors import ConfigError, IncompatibleError
from unlearnkit.methods.base import Batch, GradientConfig, GradientMethod, Phase, RunContext, StepOutput, UnlearnData
from unlearnkit.testing import tiny_data, tiny_model


@dataclass(frozen=True, kw_only=True)
class _Cfg(GradientConfig):
    lr: float = 0.01
    batch_size: int = 8


class Probe(GradientMethod):
    """Trains on the anchor batch only and records the partner batch, the learning rate and the optimizer state."""

    Config = _Cfg

    def __init__(self, phases: list[Phase], **kw: object) -> None:
        super().__init__(**kw)
        self.phases = phases
        self.partners: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self.anchors: list[torch.Tensor] = []
        self.lrs: list[float] = []
        self.state_sizes: list[int] = []
        self.starts: list[tuple[str, int, int]] = []

    def schedule(self):
        return iter(self.phases)

    def on_phase_start(self, model, phase, optimizer, ctx):
        self.starts.append((phase.name, ctx.steps, len(optimizer.state)))

    def training_step(self, model, batch, phase, optimizer, ctx):
        self.lrs.append(optimizer.param_groups[0]["lr"])
        self.state_sizes.append(len(optimizer.state))
        return super().training_step(model, batch, phase, optimizer, ctx)

    def loss(self, model, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        self.partners.append(batch.forget)
        x, y = batch.mixed if batch.mixed is not None else batch.retain  # type: ignore[misc]
        self.anchors.append(x)
        return StepOutput(F.cross_entropy(model(x), y))


def _numbered_forget(data: UnlearnData) -> ImageDataset:
    """The forget images labelled with their own index, to tell which sample a partner batch holds."""
    forget = data.forget
    assert isinstance(forget, ImageDataset)
    return ImageDataset(forget.images, torch.arange(len(forget)))


def test_a_held_partner_stream_draws_every_kth_step_holds_between_and_covers_one_pass_per_phase() -> None:
    data = tiny_data("random:0.25")  # 32 forget images: 4 partner batches of 8 per pass
    numbered = _numbered_forget(data)
    phase = {"steps": 12, "partner": "forget", "partner_data": numbered, "partner_every": 3, "hold": True}
    m = Probe([Phase("a", "retain", **phase), Phase("b", "retain", **phase)])  # type: ignore[arg-type]
    assert m.total_steps(data) == 24  # the partner adds no steps
    m.unlearn(tiny_model(), data, RunContext("cpu", 0))
    labels = [p[1] for p in m.partners]  # type: ignore[index]
    for start in (0, 12):  # each phase
        draws = [labels[start + t] for t in range(0, 12, 3)]
        assert sorted(torch.cat(draws).tolist()) == list(range(32))  # one full pass of the partner set
        for t in range(12):
            assert labels[start + t] is labels[start + t - t % 3]  # held: the very batch of the last draw
    assert not torch.equal(labels[0], labels[12])  # the second phase reshuffles


def test_an_unheld_partner_leaves_the_field_empty_between_draws() -> None:
    data = tiny_data("random:0.25")
    m = Probe([Phase("a", "retain", steps=5, partner="forget", partner_every=2)])
    m.unlearn(tiny_model(), data, RunContext("cpu", 0))
    assert [p is not None for p in m.partners] == [True, False, True, False, True]


def test_partner_batches_come_after_the_anchor_batch_from_the_run_generator() -> None:
    """The draw order is part of the contract: a run is reproducible from its seed, batch by batch."""
    data = tiny_data("random:0.25")
    union = ImageDataset(data.retain.images[:40], data.retain.targets[:40])  # type: ignore[attr-defined]
    m = Probe([Phase("a", union, steps=7, partner="forget", partner_every=2, hold=True)])
    m.unlearn(tiny_model(), data, RunContext("cpu", 5))
    g = torch.Generator().manual_seed(5)
    anchors, partners = cycle_batches(union, 8, generator=g), cycle_batches(data.forget, 8, generator=g)
    held = None
    for t in range(7):
        xa, _ = next(anchors)
        if t % 2 == 0:
            held = next(partners)
        assert torch.equal(m.anchors[t], xa)
        assert m.partners[t] is not None and held is not None
        assert torch.equal(m.partners[t][0], held[0]) and torch.equal(m.partners[t][1], held[1])  # type: ignore[index]


def test_phase_lr_replaces_the_base_rate_and_keeps_the_schedule_decay() -> None:
    data = tiny_data("random:0.25")
    m = Probe(
        [Phase("a", "retain", steps=3), Phase("b", "retain", steps=3, lr=0.5)],
        lr=0.01,
        schedule="cosine",
    )
    m.unlearn(tiny_model(), data, RunContext("cpu", 0))
    decay = [0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)]
    assert m.lrs[:3] == pytest.approx([0.01 * d for d in decay[:3]])
    assert m.lrs[3:] == pytest.approx([0.5 * d for d in decay[3:]])


def test_fresh_optimizer_clears_the_state_before_the_phase_start_hook_and_its_first_step() -> None:
    data = tiny_data("random:0.25")
    m = Probe(
        [
            Phase("a", "retain", steps=2),
            Phase("b", "retain", steps=2),
            Phase("c", "retain", steps=2, fresh_optimizer=True),
        ],
        optimizer="adam",
    )
    m.unlearn(tiny_model(), data, RunContext("cpu", 0))
    n = len([p for p in tiny_model().parameters() if p.requires_grad])
    assert m.state_sizes == [0, n, n, n, 0, n]  # b keeps a's Adam moments; c starts afresh
    assert m.starts == [("a", 0, 0), ("b", 2, n), ("c", 4, 0)]  # the hook runs once per phase, before its batches


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"source": "paired", "partner": "retain"}, "already pairs"),
        ({"source": "interleaved", "steps": 3, "partner": "retain"}, "already pairs"),
        ({"source": "retain", "partner": "retain"}, "must differ"),
        ({"source": "retain", "partner": "test"}, "partner must be"),
        ({"source": "retain", "hold": True}, "need partner="),
        ({"source": "retain", "partner": "forget", "partner_every": 0}, "partner_every must be"),
        ({"source": "retain", "lr": -1.0}, "lr must be"),
        ({"source": "retain", "lr": math.nan}, "lr must be"),
    ],
)
def test_phase_rejects_inconsistent_partner_and_lr_settings(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Phase("p", **kw)


def test_a_missing_partner_set_is_refused_by_name() -> None:
    data = tiny_data("random:0.25")
    union = ImageDataset(data.retain.images[:16], data.retain.targets[:16])  # type: ignore[attr-defined]
    m = Probe([Phase("p", union, partner="retain")])
    with pytest.raises(IncompatibleError, match="partner stream of the retain set"):
        list(m.batches(m.phases[0], UnlearnData(forget=data.forget), RunContext("cpu", 0)))
