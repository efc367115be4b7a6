"""Issue 24, wrong images deleted: the ``--indices`` grammar of ``request add`` never truncates or drops.

Each case goes through the CLI against a digits model directory and checks the request was refused with a clear
one-line error and the ledger is unchanged (no request recorded).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearnkit.data.indices import parse_index_list
from unlearnkit.errors import ConfigError


def _requests(cli, d: Path) -> list[dict]:
    r = cli("request", "list", str(d), "--format", "json")
    assert r.code == 0, r.err
    return json.loads(r.out)["requests"]


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("[3.5, 7.9]", "integers"),  # was truncated to [3, 7]
        ("[true, false]", "integers"),  # was read as [0, 1]
        ('{"indices": [1.0, 2]}', "integers"),
        ("[1, 2", "cannot parse"),  # malformed JSON: was a traceback
        ("3.5\n7", "cannot parse"),
        ("", "empty"),
    ],
)
def test_indices_file_with_non_integers_is_refused(
    cli, digits_dir: Path, tmp_path: Path, content: str, expect: str
) -> None:
    f = tmp_path / "ids.json"
    f.write_text(content)
    r = cli("request", "add", str(digits_dir), "--subject", "s", "--indices", f"@{f}")
    assert r.code == 2 and expect in r.err and "Traceback" not in r.err, r.err
    assert _requests(cli, digits_dir) == []


def test_binary_and_missing_indices_files_are_clear_errors(cli, digits_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "ids.bin"
    f.write_bytes(b"\xff\xfe\x00\x81garbage")
    r = cli("request", "add", str(digits_dir), "--subject", "s", "--indices", f"@{f}")
    assert r.code == 2 and "UTF-8" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    r = cli("request", "add", str(digits_dir), "--subject", "s", "--indices", f"@{tmp_path}")
    assert r.code == 2 and "folder" in r.err, r.err
    r = cli("request", "add", str(digits_dir), "--subject", "s", "--indices", "@")
    assert r.code == 2 and "file name" in r.err, r.err
    assert _requests(cli, digits_dir) == []


def test_reversed_range_is_refused_not_dropped(cli, digits_dir: Path) -> None:
    r = cli("request", "add", str(digits_dir), "--subject", "s", "--indices", "3,40-30")
    assert r.code == 2 and "backwards" in r.err and "30-40" in r.err, r.err
    assert _requests(cli, digits_dir) == []


def test_huge_range_is_refused_before_allocating(cli, digits_dir: Path) -> None:
    r = cli("request", "add", str(digits_dir), "--subject", "s", "--indices", "0-99999999999")
    assert r.code == 2 and "outside the training set" in r.err and "Traceback" not in r.err, r.err
    assert _requests(cli, digits_dir) == []


def test_a_good_list_records_exactly_those_indices(cli, digits_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "ids.json"
    f.write_text("[12, 5]")
    assert cli("request", "add", str(digits_dir), "--subject", "a", "--indices", "3,40-42").code == 0
    assert cli("request", "add", str(digits_dir), "--subject", "b", "--indices", f"@{f}").code == 0
    assert [r["indices"] for r in _requests(cli, digits_dir)] == [[3, 40, 41, 42], [5, 12]]


def test_parse_index_list_checks_ranges_against_the_size() -> None:
    assert parse_index_list("1, 4-6 ,9") == [1, 4, 5, 6, 9]
    assert parse_index_list("2-2") == [2]
    with pytest.raises(ConfigError, match=r"\[0, 100\)"):
        parse_index_list("90-100", size=100)
    with pytest.raises(ConfigError, match="outside"):
        parse_index_list("5,100", size=100)
    with pytest.raises(ConfigError, match="integers"):
        parse_index_list("3,x")
    with pytest.raises(ConfigError, match="integers"):
        parse_index_list("3-")
    with pytest.raises(ConfigError, match="empty"):
        parse_index_list(" ")
