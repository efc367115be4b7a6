"""The shared loop and the runner: schedules as data, hooks, DataLoader path, seeding, timing, precision."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from unlearnkit.data.datasets import ImageDataset, to_float
from unlearnkit.errors import ConfigError
from unlearnkit.methods import create_method
from unlearnkit.methods.base import Batch, GradientConfig, GradientMethod, Phase, RunContext, StepOutput, UnlearnData
from unlearnkit.runner import run_method
from unlearnkit.testing import tiny_data, tiny_model


@dataclass(frozen=True, kw_only=True)
class _Cfg(GradientConfig):
    lr: float = 0.01
    batch_size: int = 8


class Recorder(GradientMethod):
    """Records what the loop hands to the hooks; the schedule is given per instance."""

    Config = _Cfg

    def __init__(self, phases: list[Phase], **kw: object) -> None:
        super().__init__(**kw)
        self.phases = phases
        self.seen: list[tuple[str, int, int | None, int | None, int]] = []
        self.epoch_ends: list[tuple[str, int]] = []
        self.finalized = False

    def schedule(self):
        return iter(self.phases)

    def loss(self, model, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        parts = [b for b in (batch.forget, batch.retain, batch.mixed) if b is not None]
        self.seen.append(
            (
                phase.name,
                ctx.epoch,
                None if batch.forget is None else len(batch.forget[1]),
                None if batch.retain is None else len(batch.retain[1]),
                ctx.steps,
            )
        )
        x, y = parts[0]
        return StepOutput(F.cross_entropy(model(x), y))

    def on_epoch_end(self, model, phase, ctx):
        self.epoch_ends.append((phase.name, ctx.epoch))

    def finalize(self, model, data, ctx):
        self.finalized = True
        return model


def test_phases_carry_source_length_and_batch_size_and_the_step_count_derives_from_them() -> None:
    data = tiny_data("random:0.25")  # 32 forget, 96 retain
    union = ImageDataset(
        torch.cat([data.forget.images, data.retain.images]), torch.cat([data.forget.targets, data.retain.targets])
    )
    phases = [
        Phase("f", "forget", epochs=2, batch_size=16),
        Phase("r", "retain", epoch=7),
        Phase("u", union, batch_size=64),
        Phase("s", "retain", steps=5),
        Phase("i", "interleaved", steps=6, forget_every=3),
    ]
    m = Recorder(phases)
    assert m.total_steps(data) == 2 * 2 + 12 + 2 + 5 + 6
    run_method(m, tiny_model(), data, device="cpu")
    names = [s[0] for s in m.seen]
    assert names == ["f"] * 4 + ["r"] * 12 + ["u"] * 2 + ["s"] * 5 + ["i"] * 6
    assert {s[2] for s in m.seen if s[0] == "f"} == {16}  # phase batch size
    assert {s[1] for s in m.seen if s[0] == "f"} == {1, 2} and {s[1] for s in m.seen if s[0] == "r"} == {7}
    # interleaved: a forget batch at steps 0 and 3 of the phase, a retain batch every step
    inter = [s for s in m.seen if s[0] == "i"]
    assert [s[2] is not None for s in inter] == [True, False, False, True, False, False]
    assert all(s[3] == 8 for s in inter)
    assert [s[4] for s in m.seen] == list(range(len(m.seen)))  # hooks see the step
    assert m.epoch_ends == [("f", 1), ("f", 2), ("r", 7), ("u", 4), ("s", 5), ("i", 6)]
    assert m.finalized


def test_max_steps_stops_the_loop_and_skips_the_unfinished_epoch_end() -> None:
    m = Recorder([Phase("r", "retain", epochs=3)], max_steps=5, batch_size=48)  # 2 steps an epoch
    data = tiny_data("random:0.25")
    assert m.total_steps(data) == 5
    run_method(m, tiny_model(), data, device="cpu")
    assert len(m.seen) == 5 and m.epoch_ends == [("r", 1), ("r", 2)]


def test_phase_rejects_an_interleaved_phase_without_steps() -> None:
    with pytest.raises(ConfigError, match="interleaved phase needs steps"):
        Phase("i", "interleaved")


class NoisyDigits(Dataset):
    """A plain torch Dataset whose transform draws fresh noise on every access (like a random augmentation)."""

    def __init__(self, base: ImageDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x + 0.01 * torch.rand(x.shape), y


def test_an_ordinary_dataset_gets_fresh_transforms_every_epoch_through_a_dataloader() -> None:
    data = tiny_data("random:0.25")
    retain = NoisyDigits(data.retain)
    sums: list[float] = []

    class Probe(Recorder):
        def loss(self, model, batch, phase, ctx):
            sums.append(float(batch.retain[0].sum()))
            return super().loss(model, batch, phase, ctx)

    run_method(
        Probe([Phase("r", "retain", epochs=2)], batch_size=96),
        tiny_model(),
        UnlearnData(forget=data.forget, retain=retain),
        device="cpu",
        seed=0,
    )
    assert len(sums) == 2 and sums[0] != sums[1]  # same 96 images, new noise in epoch 2
    again: list[float] = []
    sums, first = again, sums
    run_method(
        Probe([Phase("r", "retain", epochs=2)], batch_size=96),
        tiny_model(),
        UnlearnData(forget=data.forget, retain=retain),
        device="cpu",
        seed=0,
    )
    assert again == first  # and reproducible under the run's seed


def test_the_runner_seeds_forks_the_global_rng_and_times_setup_and_update() -> None:
    data, model = tiny_data(), tiny_model(trained=True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    res = run_method(create_method("salun", epochs=1, batch_size=32), model, data, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    assert res.setup_seconds > 0 and res.update_seconds > 0 and res.steps > 0
    assert res.seconds == pytest.approx(res.setup_seconds + res.update_seconds)
    again = run_method(create_method("salun", epochs=1, batch_size=32), model, data, device="cpu")
    assert all(
        torch.equal(a, b)
        for a, b in zip(res.model.state_dict().values(), again.model.state_dict().values(), strict=True)
    )


def test_only_a_rollback_run_or_the_retain_guard_keeps_a_copy_and_it_lives_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    copies: list[str] = []
    real = torch.Tensor.to

    def spy(self, *args, **kw):
        if kw.get("copy") and args and args[0] == "cpu":
            copies.append("cpu")
        return real(self, *args, **kw)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    data = tiny_data()
    run_method(create_method("ft", epochs=1, batch_size=32, max_retain_drop=100), tiny_model(), data, device="cpu")
    assert copies == []  # guard off (100 points), no rollback: no copy at all
    run_method(create_method("ft", epochs=1, batch_size=32), tiny_model(), data, device="cpu")
    assert copies  # the retain guard, on by default, keeps the last good check on the CPU
    copies.clear()
    ft = create_method("ft", epochs=1, batch_size=32, on_divergence="rollback", max_retain_drop=100)
    run_method(ft, tiny_model(), data, device="cpu")
    assert copies  # one CPU copy per tensor of the state dict


def test_logs_are_converted_in_batches_of_log_every_steps() -> None:
    ctx = RunContext("cpu", log_every=3)
    ctx.log(loss=torch.tensor(1.0))
    ctx.log(loss=torch.tensor(2.0))
    assert ctx._history == []  # nothing converted yet
    ctx.log(loss=torch.tensor(3.0))
    assert [h["loss"] for h in ctx._history] == [1.0, 2.0, 3.0]
    ctx.log(loss=torch.tensor(4.0))
    assert [h["loss"] for h in ctx.history] == [1.0, 2.0, 3.0, 4.0]  # reading the history flushes


def test_bf16_autocast_runs_the_loss_in_bfloat16() -> None:
    dtypes: list[torch.dtype] = []

    class Probe(Recorder):
        def loss(self, model, batch, phase, ctx):
            out = model(batch.retain[0])
            dtypes.append(out.dtype)
            return F.cross_entropy(out.float(), batch.retain[1])

    run_method(Probe([Phase("r", "retain", steps=1)]), tiny_model(), tiny_data(), device="cpu", amp="bf16")
    run_method(Probe([Phase("r", "retain", steps=1)]), tiny_model(), tiny_data(), device="cpu")
    assert dtypes == [torch.bfloat16, torch.float32]
    with pytest.raises(ConfigError, match="bf16"):
        RunContext("cpu", amp="fp16")  # type: ignore[arg-type]


class FloatDigits(Dataset):
    """A Dataset of float images that is not our ImageDataset (materialised as float)."""

    def __init__(self, base: ImageDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i]


def test_rl_fixed_wrong_keeps_float_retain_images_beside_uint8_forget_images() -> None:
    data = tiny_data("random:0.25")
    assert data.forget.images.dtype == torch.uint8
    m = create_method("rl", variant="fixed_wrong")
    m.setup(tiny_model(), UnlearnData(forget=data.forget, retain=FloatDigits(data.retain)), RunContext())
    retain_part = m.union_.images[len(data.forget) :]
    assert retain_part.dtype == torch.float32
    assert torch.allclose(retain_part, to_float(data.retain.images))  # not cast to uint8 (which zeroes them)
    assert torch.allclose(m.union_.images[: len(data.forget)], to_float(data.forget.images))


def test_reinitialisation_is_seeded_and_leaves_every_global_generator_alone() -> None:
    from unlearnkit.methods._common import reinitialize_

    state = torch.get_rng_state()
    a = reinitialize_(copy.deepcopy(tiny_model(trained=True)), 5)
    b = reinitialize_(tiny_model(), 5)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_salun_is_random_label_plus_a_mask() -> None:
    from unlearnkit.methods.random_label import RandomLabel

    m = create_method("salun")
    assert isinstance(m, RandomLabel)
    assert set(create_method("rl").config.to_dict()) < set(m.config.to_dict())
    assert not hasattr(nn.Module, "union_")


# ------------------------------------------------------------------------------ rules without a retrained model
def test_a_retain_drop_beyond_the_limit_stops_the_run_and_restores_the_last_good_check() -> None:
    data, model = tiny_data(), tiny_model(trained=True)
    # Gradient ascent at a large lr wrecks the model within a few steps; the guard stops it within 5 points.
    m = create_method("ga", lr=0.5, epochs=20, batch_size=8, max_retain_drop=5.0, check_every=1)
    with pytest.warns(RuntimeWarning, match="Stopped early: retain accuracy fell"):
        res = run_method(m, model, data, device="cpu")
    assert res.stop_reason is not None and "retain accuracy fell" in res.stop_reason
    from unlearnkit.methods.base import retain_accuracy_sample

    start = retain_accuracy_sample(model, data.test, RunContext())
    after = retain_accuracy_sample(res.model, data.test, RunContext())
    assert after >= start - 5.0
    assert res.steps < m.total_steps(data)  # stopped early


def test_stop_at_target_stops_class_forgetting_once_the_class_is_gone() -> None:
    data, model = tiny_data("class:1"), tiny_model(trained=True)
    # RL keeps the retain side (a target stop needs it since issue 24 item 7; GA collapses the tiny model first)
    m = create_method("rl", lr=0.05, epochs=20, batch_size=8, stop_at_target=True, max_retain_drop=100.0, check_every=1)
    res = run_method(m, model, data, device="cpu")
    assert res.stop_reason is not None and "reached its target 0.0%" in res.stop_reason
    from unlearnkit.methods.base import retain_accuracy_sample

    assert retain_accuracy_sample(res.model, data.forget, RunContext()) <= 1.0
    assert res.steps < m.total_steps(data)


def test_untuned_pairs_get_the_stopping_rule_tuned_ones_keep_their_preset() -> None:
    from unlearnkit.pipeline import prepare_method

    assert prepare_method("ga", "synthetic", "small_cnn", "class:1").config.stop_at_target is True
    assert (
        prepare_method("ga", "synthetic", "small_cnn", "class:1", {"stop_at_target": False}).config.stop_at_target
        is False
    )
    assert not prepare_method("ga", "fashion_mnist", "small_cnn", "class:0").config.stop_at_target
