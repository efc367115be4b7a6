import json

import numpy as np
import pytest

from unlearnkit.data import Split, load_dataset, make_split, parse_forget_spec, split_for
from unlearnkit.errors import ConfigError


@pytest.fixture(scope="module")
def syn():
    return load_dataset("synthetic")


def test_grammar():
    assert parse_forget_spec("class:3").classes == (3,)
    assert parse_forget_spec("class:7,3").classes == (3, 7)
    assert parse_forget_spec("random:0.1").fraction == 0.1


@pytest.mark.parametrize("spec", ["class", "class:a", "class:", "random:x", "bogus:1", "random", "class:1,,2"])
def test_malformed_spec(spec):
    with pytest.raises(ConfigError, match=r"forget spec|malformed"):
        parse_forget_spec(spec)


@pytest.mark.parametrize("frac", ["0", "1", "-0.2", "1.5"])
def test_fraction_bounds(frac):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        parse_forget_spec(f"random:{frac}")


def test_class_split(syn):
    s = split_for(syn, "class:1", 0)
    y = syn.train.targets.numpy()
    assert (y[s.forget] == 1).all() and (y[s.retain] != 1).all()
    assert len(s.forget) + len(s.retain) == len(y) and s.is_classwise and s.forget_classes == (1,)


def test_class_out_of_range(syn):
    with pytest.raises(ConfigError, match=r"outside \[0, 4\)"):
        split_for(syn, "class:4", 0)
    with pytest.raises(ConfigError, match="outside"):
        split_for(syn, "class:-1", 0)


def test_random_split_seeded(syn):
    a, b, c = split_for(syn, "random:0.25", 0), split_for(syn, "random:0.25", 0), split_for(syn, "random:0.25", 1)
    assert a == b and a.sha256 == b.sha256 and a.sha256 != c.sha256
    assert len(a.forget) == 32 and not a.is_classwise


def test_random_fraction_too_small(syn):
    with pytest.raises(ConfigError, match="selects no sample"):
        split_for(syn, "random:0.001", 0)


def test_whole_training_set(syn):
    with pytest.raises(ConfigError, match="whole training set"):
        split_for(syn, "class:0,1,2,3", 0)
    with pytest.raises(ConfigError, match="whole training set"):
        split_for(syn, "random:0.999", 0)


def test_indices_json_and_text(syn, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([5, 1, 9]))
    (tmp_path / "b.txt").write_text("5\n1\n9\n")
    a, b = split_for(syn, f"indices:{tmp_path / 'a.json'}", 0), split_for(syn, f"indices:{tmp_path / 'b.txt'}", 0)
    assert a.forget.tolist() == [1, 5, 9] and a.sha256 == b.sha256


def test_indices_errors(syn, tmp_path):
    (tmp_path / "dup.json").write_text("[1, 2, 2]")
    (tmp_path / "oor.json").write_text("[1, 128]")
    (tmp_path / "neg.json").write_text("[-1]")
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "bad.json").write_text('["a"]')
    with pytest.raises(ConfigError, match="duplicates"):
        split_for(syn, f"indices:{tmp_path / 'dup.json'}", 0)
    with pytest.raises(ConfigError, match="outside the training set"):
        split_for(syn, f"indices:{tmp_path / 'oor.json'}", 0)
    with pytest.raises(ConfigError, match="outside the training set"):
        split_for(syn, f"indices:{tmp_path / 'neg.json'}", 0)
    with pytest.raises(ConfigError, match="empty forget set"):
        split_for(syn, f"indices:{tmp_path / 'empty.json'}", 0)
    with pytest.raises(ConfigError, match="list of integers"):
        split_for(syn, f"indices:{tmp_path / 'bad.json'}", 0)
    with pytest.raises(ConfigError, match="does not exist"):
        split_for(syn, f"indices:{tmp_path / 'missing.json'}", 0)


def test_empty_class_forget_set():
    with pytest.raises(ConfigError, match="empty forget set"):
        make_split("toy", np.array([0, 0, 2, 2]), 2, "class:1", num_classes=3)


def test_save_load_identical(syn, tmp_path):
    s = split_for(syn, "random:0.1", 3)
    s.save(tmp_path / "split.json")
    t = Split.load(tmp_path / "split.json")
    assert t == s and t.sha256 == s.sha256 and np.array_equal(t.forget, s.forget) and t.seed == 3


def test_edited_split_file_is_refused(syn, tmp_path):
    s = split_for(syn, "random:0.1", 3)
    d = s.to_dict()
    d["forget"][0] = d["retain"][0]
    (tmp_path / "split.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="digest"):
        Split.load(tmp_path / "split.json")
