"""Helpers shipped for tests and plugin authors: tiny data and a tiny model that learn in a second."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .data.datasets import DatasetBundle, load_dataset
from .data.splits import Split, split_for

if TYPE_CHECKING:
    from .methods.base import Method, UnlearnData


def tiny_bundle(**kw: Any) -> DatasetBundle:
    """The `synthetic` dataset (4 classes, 3×8×8, 128 train / 64 test)."""
    return load_dataset("synthetic", **kw)


def tiny_split(spec: str = "class:1", seed: int = 0, **kw: Any) -> Split:
    return split_for(tiny_bundle(**kw), spec, seed)


def tiny_data(spec: str = "class:1", seed: int = 0, **kw: Any) -> UnlearnData:
    """`UnlearnData` over the synthetic dataset for ``spec`` (forget / retain / test and the split)."""
    from .methods.base import UnlearnData

    b = tiny_bundle(**kw)
    s = split_for(b, spec, seed)
    return UnlearnData(
        forget=b.train.subset(s.forget),
        retain=b.train.subset(s.retain),
        test=b.test,
        split=s,
        augment=b.info.augment,
        num_classes=b.info.num_classes,
    )


def tiny_model(seed: int = 0, num_classes: int = 4, trained: bool = False, model: str = "small_cnn") -> nn.Module:
    """A SmallCNN (width 8) for 3×8×8 inputs; ``trained=True`` fits it on the full synthetic training set."""
    from .models import create_model
    from .training import Recipe, train

    torch.manual_seed(seed)
    kw: dict[str, Any] = {"width": 8, "hidden": 32} if model == "small_cnn" else {}
    m = create_model(model, num_classes, 3, 8, **kw)
    if trained:
        train(
            m,
            tiny_bundle(num_classes=num_classes).train,
            Recipe(epochs=15, batch_size=32, lr=0.05),
            seed=seed,
            progress=False,
        )
    return m


def tiny_head_model(head: str = "ridge", seed: int = 0) -> nn.Module:
    """A `HeadModel` on the trained tiny SmallCNN (its features), its head trained on the whole synthetic training
    set (``certified``: b drawn from a seed, which is for tests only)."""
    from .heads import train_head

    extra: dict[str, Any] = {"noise_seed": seed} if head == "certified" else {}
    return train_head(
        tiny_model(seed=seed, trained=True), tiny_bundle().train, head=head, dataset="synthetic", cache=False, **extra
    )


def _contract_model(cls: Any) -> nn.Module:
    """The model the contract checks run a method on: the trained tiny network, or a tiny head model for a method
    that deletes from head models only (``requires.model_kinds``)."""
    kinds = getattr(getattr(cls, "requires", None), "model_kinds", frozenset({"plain"}))
    return tiny_model(trained=True) if "plain" in kinds else tiny_head_model()


# ----------------------------------------------------------------------------------- the method contract
class RaisingDataset(torch.utils.data.Dataset):
    """A dataset that fails on any access: stands in for data a method declares it does not need."""

    def __init__(self, what: str = "retain") -> None:
        self.what = what

    def _fail(self) -> None:
        raise AssertionError(f"the method read the {self.what} set, although its `requires` says it does not")

    def __len__(self) -> int:
        self._fail()
        return 0

    def __getitem__(self, i: int) -> Any:
        self._fail()

    def __iter__(self) -> Any:
        self._fail()


def _method_class(cls_or_name: Any) -> tuple[type[Method], str]:
    from .methods import METHODS

    if isinstance(cls_or_name, str):
        return METHODS.get(cls_or_name), METHODS.canonical(cls_or_name)
    name = getattr(cls_or_name, "name", "") or cls_or_name.__name__
    return cls_or_name, name


def _build(cls: type[Method], name: str, **extra: Any) -> Method:
    from .methods import METHODS, create_method

    values = {**getattr(cls, "smoke_config", {}), **extra}
    if name in METHODS and METHODS.get(name) is cls:
        return create_method(name, **values)
    return cls(cls.Config.build(values, name))


def _run(cls: type[Method], name: str, data: Any, model: nn.Module, seed: int = 0) -> nn.Module:
    from .runner import run_method

    return run_method(_build(cls, name), model, data, device="cpu", seed=seed).model


def check_runs(cls_or_name: Any) -> None:
    """Runs on tiny data and returns a model with the same parameter names and shapes, all finite."""
    cls, name = _method_class(cls_or_name)
    model = _contract_model(cls)
    out = _run(cls, name, tiny_data(), model)
    if not isinstance(out, nn.Module):
        raise AssertionError(f"{name}: unlearn returned {type(out).__name__}, not an nn.Module")
    before = {k: tuple(v.shape) for k, v in model.named_parameters()}
    after = {k: tuple(v.shape) for k, v in out.named_parameters()}
    if before != after:
        raise AssertionError(f"{name}: parameter names/shapes changed: {set(before) ^ set(after) or 'shapes'}")
    bad = [k for k, v in out.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise AssertionError(f"{name}: non-finite values in {bad}")


def check_input_untouched(cls_or_name: Any) -> None:
    """`unlearnkit.unlearn` leaves the input model bit-identical."""
    from .runner import unlearn

    cls, name = _method_class(cls_or_name)
    model = _contract_model(cls)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    data = tiny_data()
    unlearn(
        model,
        data.forget,
        data.retain,
        method=_build(cls, name),
        test=data.test,
        split=data.split,
        device="cpu",
        seed=0,
    )
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, snapshot[k])]
    if changed:
        raise AssertionError(f"{name}: unlearn modified the input model ({changed[:3]}…)")


def check_deterministic(cls_or_name: Any) -> None:
    """The same seed gives identical weights; calling twice from the same start gives the same result."""
    cls, name = _method_class(cls_or_name)
    model = _contract_model(cls)
    data = tiny_data()
    a = _run(cls, name, data, model, seed=3).state_dict()
    b = _run(cls, name, data, model, seed=3).state_dict()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    if diff:
        raise AssertionError(f"{name}: two runs with seed 3 differ in {diff[:3]}…")


def check_changes_weights(cls_or_name: Any) -> None:
    """The method actually edits the model: a method that returns its input unchanged fails the contract."""
    cls, name = _method_class(cls_or_name)
    model = _contract_model(cls)
    out = _run(cls, name, tiny_data(), model)
    before, after = model.state_dict(), out.state_dict()
    if all(k in before and before[k].shape == v.shape and torch.equal(before[k], v) for k, v in after.items()):
        raise AssertionError(f"{name}: the returned model is identical to the input (nothing was unlearned)")


def check_final_loop(cls_or_name: Any) -> None:
    """A `GradientMethod` keeps the shared loop: ``unlearn``, ``batches`` and ``total_steps`` are not redefined."""
    from .methods.base import FINAL_LOOP_METHODS, GradientMethod

    cls, name = _method_class(cls_or_name)
    if not issubclass(cls, GradientMethod):
        return
    replaced = [m for m in FINAL_LOOP_METHODS if getattr(cls, m) is not getattr(GradientMethod, m)]
    if replaced:
        raise AssertionError(f"{name}: redefines {', '.join(replaced)} of the shared loop; use Phase and the hooks")


def check_config(cls_or_name: Any) -> None:
    """An unknown key raises ConfigError with a did-you-mean hint; the config round-trips via to_dict."""
    from .errors import ConfigError
    from .methods import METHODS, create_method

    cls, name = _method_class(cls_or_name)
    fields = cls.Config.field_names()
    if fields:
        wrong = fields[0] + "x"
        try:
            cls.Config.build({wrong: 1}, name)
        except ConfigError as exc:
            if "did you mean" not in str(exc) or repr(fields[0]) not in str(exc):
                raise AssertionError(f"{name}: ConfigError without a did-you-mean hint: {exc}") from None
        else:
            raise AssertionError(f"{name}: unknown option {wrong!r} was accepted")
    method = _build(cls, name)
    d = method.config.to_dict()
    again = create_method(name, **d) if name in METHODS and METHODS.get(name) is cls else cls(cls.Config.build(d, name))
    if again.config != method.config:
        raise AssertionError(f"{name}: config does not round-trip: {method.config} != {again.config}")


def check_respects_requirements(cls_or_name: Any) -> None:
    """A method whose ``requires.retain`` is False never reads the retain set."""
    from .methods.base import UnlearnData

    cls, name = _method_class(cls_or_name)
    if cls.requires.retain:
        return
    d = tiny_data()
    data = UnlearnData(
        forget=d.forget,
        retain=RaisingDataset("retain"),
        test=d.test,
        split=d.split,
        augment=d.augment,
        num_classes=d.num_classes,
    )
    _run(cls, name, data, _contract_model(cls))


CHECKS = (
    check_runs,
    check_input_untouched,
    check_deterministic,
    check_changes_weights,
    check_final_loop,
    check_config,
    check_respects_requirements,
)


def check_method(cls_or_name: Any) -> None:
    """Run the whole method contract on a registered name or a `Method` subclass; raise with every failure.

    Each check uses the class's ``smoke_config`` overrides so it finishes in seconds on `tiny_data()`.

    Example:
        >>> check_method("ft")
    """
    problems = []
    for check in CHECKS:
        try:
            check(cls_or_name)
        except Exception as exc:
            problems.append(f"{check.__name__}: {type(exc).__name__}: {exc}")
    if problems:
        raise AssertionError("method contract failed:\n  - " + "\n  - ".join(problems))
