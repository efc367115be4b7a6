"""records.jsonl: atomic appends, torn last lines, bad lines, duplicates."""

from __future__ import annotations

import json

import pytest

from unlearnkit.bench.records import append_record, read_records, repair_tail


def _rec(key: str, **extra) -> dict:
    return {"bench": {"run_key": key}, **extra}


def test_append_writes_one_complete_line_each(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, _rec("a", note="line\nbreak"))
    append_record(path, _rec("b", value=1.5))
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3  # two newline-terminated lines
    assert [json.loads(x)["bench"]["run_key"] for x in lines[:2]] == ["a", "b"]
    assert [r["bench"]["run_key"] for r in read_records(path)] == ["a", "b"]
    assert read_records(tmp_path)[0]["note"] == "line\nbreak"  # a folder reads folder/records.jsonl


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, _rec("a"))
    whole = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b'{"bench": {"run_key": "b"}, "x": [1, 2')  # an append cut short
    assert [r["bench"]["run_key"] for r in read_records(path)] == ["a"]
    assert repair_tail(path) == len(b'{"bench": {"run_key": "b"}, "x": [1, 2')
    assert path.read_bytes() == whole
    assert repair_tail(path) == 0
    append_record(path, _rec("b"))
    assert [r["bench"]["run_key"] for r in read_records(path)] == ["a", "b"]


def test_a_file_that_is_only_a_torn_line_is_emptied(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"bench": {"run')
    assert read_records(path) == []
    repair_tail(path)
    assert path.read_bytes() == b""


def test_bad_middle_line_warns_and_duplicates_are_dropped(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(
        json.dumps(_rec("a", v=1))
        + "\nnot json\n"
        + json.dumps(_rec("a", v=2))
        + "\n"
        + json.dumps({"no_bench": True})
        + "\n"
    )
    with pytest.warns(UserWarning, match="skipped 1 line"):
        recs = read_records(path)
    assert [r.get("v") for r in recs] == [1, None]  # first of the duplicates kept; records without a key kept
    assert read_records(tmp_path / "missing.jsonl") == []
