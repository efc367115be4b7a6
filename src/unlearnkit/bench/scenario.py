"""What a report shows: the table columns, and a scenario (dataset · model · forget spec) with its rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .identity import RETRAINED

GAP_KEYS = ("accuracy_forget", "accuracy_retain", "accuracy_test", "mia_efficacy_forget")
MANIPULATION_KEYS = ("asr_test", "ic_confusion_test", "memorised_manipulated")


@dataclass(frozen=True)
class Column:
    """One table column: the metric key, its header, how to print it and whether a gap goes beside it."""

    key: str
    header: str
    decimals: int = 2
    suffix: str = ""
    gap: bool = False


COLUMNS = (
    Column("accuracy_forget", "FA", gap=True),
    Column("accuracy_retain", "RA", gap=True),
    Column("accuracy_test", "TA", gap=True),
    Column("asr_test", "ASR"),  # manipulated data only (a table shows these columns when a row has them)
    Column("ic_confusion_test", "IC test"),
    Column("memorised_manipulated", "Memorised"),
    Column("mia_efficacy_forget", "MIA-Eff.", gap=True),
    Column("avg_gap_to_retrained", "Avg. gap"),
    Column("avg_gap_of_means", "Avg. gap of means*", decimals=2),
    Column("kl_to_retrained_forget", "KL→Retrain", decimals=3),
    Column("runtime_seconds", "Runtime (s)", decimals=2),
    Column("speedup_vs_retrained", "Speedup", decimals=1, suffix="×"),
    Column("noise_floor_avg_gap", "Noise floor"),
)


@dataclass
class Row:
    """One table row: a baseline (Original, Retrained) or a method label, aggregated over seeds."""

    label: str
    kind: str  # "original" | "retrained" | "method"
    method: str
    seeds: list[Any]
    metrics: dict[str, dict[str, Any] | None]
    gaps: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    per_class: list[float] | None = None


@dataclass
class Scenario:
    dataset: str
    model: str
    forget: str
    rows: list[Row]
    n_records: int
    devices: list[str]
    mia_flavours: list[str]
    audits: Any = None  # an `audit_report.AuditSection` when the records hold audits

    @property
    def classwise(self) -> bool:
        return self.forget.startswith("class:")

    @property
    def title(self) -> str:
        return f"{self.dataset} · {self.model} · {self.forget}"

    @property
    def slug(self) -> str:
        raw = f"{self.dataset}_{self.model}_{self.forget}"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)

    @property
    def forgotten_classes(self) -> list[int]:
        if not self.forget.startswith("class:"):
            return []
        try:
            return [int(c) for c in self.forget.split(":", 1)[1].split(",")]
        except ValueError:
            return []

    def row(self, label: str) -> Row | None:
        return next((r for r in self.rows if r.label == label), None)

    @property
    def retrained(self) -> Row | None:
        """The retrained model's row (the reference of every plot), if the records hold it."""
        return self.row(RETRAINED)
