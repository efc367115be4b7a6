"""Records: write/read round trip, relative paths only, aggregation over seeds, pandas frame."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from scipy import stats

from unlearnkit.errors import ConfigError
from unlearnkit.evaluation import RunInfo, aggregate, evaluate, read_record, records_to_frame, t_interval, write_record


@pytest.fixture(scope="module")
def record(bundle, class_split, original, retrained):
    return evaluate(
        original,
        bundle,
        class_split,
        retrained=retrained,
        device="cpu",
        run=RunInfo(method="finetune", config={"lr": 0.1}, runtime_seconds=1.0),
    )


def test_round_trip_is_strict_json(tmp_path, record):
    path = write_record(record, tmp_path / "sub" / "record.json")
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    back = read_record(path)
    assert back == json.loads(json.dumps(record))
    assert not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_absolute_paths_are_refused(tmp_path, record):
    bad = copy.deepcopy(record)
    bad["extras"]["competition"] = {"eps_per_example_file": str(tmp_path / "eps.npy")}
    with pytest.raises(ConfigError, match="absolute path"):
        write_record(bad, tmp_path / "r.json")
    ok = copy.deepcopy(record)
    ok["extras"]["competition"] = {"eps_per_example_file": "eps.npy"}
    write_record(ok, tmp_path / "r.json")


def test_read_rejects_other_schema(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"schema_version": "2.0"}))
    with pytest.raises(ConfigError, match="schema_version"):
        read_record(p)
    with pytest.raises(ConfigError, match="not an evaluation record"):
        write_record({"a": 1}, p)


def test_run_id_depends_on_seed_and_config(bundle, class_split, original, retrained, record):
    other = evaluate(
        original,
        bundle,
        class_split,
        retrained=retrained,
        device="cpu",
        run=RunInfo(method="finetune", config={"lr": 0.1}, runtime_seconds=1.0, seed=5),
    )
    assert other["run_id"] != record["run_id"]


def _fake(seed, fa_u, fa_r, method="m", lr=0.1):
    base = {"accuracy_retain": 90.0, "accuracy_test": 80.0, "mia_efficacy_forget": 10.0}
    um = {"accuracy_forget": fa_u, **base}
    rm = {"accuracy_forget": fa_r, **base}
    gaps = {
        "accuracy_forget": abs(fa_u - fa_r),
        "accuracy_retain": 0.0,
        "accuracy_test": 0.0,
        "mia_efficacy_forget": 0.0,
    }
    gaps["avg_gap_to_retrained"] = np.mean(list(gaps.values()))
    return {
        "schema_version": "1.0",
        "seed": seed,
        "task": {"dataset": "d", "scenario": "random", "forget": {"spec": "random:0.1"}},
        "model": {"arch": "small_cnn", "config": None},
        "method": {"name": method, "config": {"lr": lr}},
        "evaluation_config": {"mia_flavour": "svc_confidence"},
        "models": {"unlearned": {"metrics": um}, "retrained": {"metrics": rm}},
        "gaps_to_retrained": gaps,
        "noise_floor_avg_gap": 0.1 * seed,
    }


def test_aggregate_over_seeds():
    recs = [_fake(0, 10.0, 12.0), _fake(1, 14.0, 11.0), _fake(2, 12.0, 13.0), _fake(0, 50.0, 12.0, method="other")]
    out = aggregate(recs)
    assert len(out) == 2
    g = next(e for e in out if e["group"]["method"] == "m")
    assert g["n_seeds"] == 3 and g["seeds"] == [0, 1, 2]
    fa = g["metrics"]["accuracy_forget"]
    v = np.array([10.0, 14.0, 12.0])
    assert fa["mean"] == pytest.approx(12.0) and fa["std"] == pytest.approx(v.std(ddof=1))
    half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    assert fa["ci95"] == pytest.approx([12.0 - half, 12.0 + half])
    assert stats.t.ppf(0.975, 2) == pytest.approx(4.303, abs=1e-3)  # the table value of evaluation.md §7
    # paired gap: mean of per-seed |Δ| = (2 + 3 + 1) / 3 / 4 ; gap of means: |12 − 12| / 4 = 0
    assert g["avg_gap_paired"]["mean"] == pytest.approx(np.mean([2, 3, 1]) / 4)
    assert g["avg_gap_of_means"]["value"] == pytest.approx(0.0)
    assert g["gaps_paired"]["accuracy_forget"]["mean"] == pytest.approx(2.0)
    assert g["reference_metrics"]["retrained"]["accuracy_forget"]["mean"] == pytest.approx(12.0)
    assert g["noise_floor_avg_gap"]["n"] == 3
    with pytest.raises(ConfigError, match="duplicate seeds"):
        aggregate([_fake(0, 1.0, 1.0), _fake(0, 2.0, 1.0)])


def test_t_interval_edge_cases():
    assert t_interval([]) == {"mean": None, "std": None, "ci95": None, "n": 0}
    assert t_interval([3.0])["ci95"] is None and t_interval([3.0])["mean"] == 3.0


def test_records_to_frame(record):
    pd = pytest.importorskip("pandas")
    df = records_to_frame([record, record])
    assert isinstance(df, pd.DataFrame) and len(df) == 2
    assert (
        df["models.unlearned.metrics.accuracy_forget"].iloc[0]
        == record["models"]["unlearned"]["metrics"]["accuracy_forget"]
    )
    assert "gaps_to_retrained.avg_gap_to_retrained" in df.columns
