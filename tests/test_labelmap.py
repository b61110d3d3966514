"""curate.labelmap: class-name keys, near-identical names, label map files and composition (issue 16)."""

from __future__ import annotations

import pandas as pd
import pytest

from curate.errors import OptionError
from curate.labelmap import (
    apply_map,
    check_map,
    compose,
    label_key,
    parse_pairs,
    read_map_file,
    refresh_conflicts,
    similar_labels,
)


@pytest.mark.parametrize("a, b, same", [
    ("Brown_Glass", "brown-glass", True),    # case and separators (the example)
    ("brown glass", "BROWN  GLASS", True),   # spaces
    ("BrownGlass", "brown_glass", True),     # camel case
    ("battery", "Batteries", True),          # plural -ies
    ("box", "boxes", True),                  # plural -es
    ("paper", "papers", True),               # plural -s
    ("glass", "glas", False),                # -ss is not a plural
    ("metal", "plastic", False),             # different classes
    ("bus", "bu", False),                    # short words keep their s
])
def test_label_key_folds_only_what_a_person_would_call_the_same_class(a, b, same):
    assert (label_key(a) == label_key(b)) is same


def test_similar_labels_suggests_the_most_common_spelling_across_sources():
    found = similar_labels({"kaggle1": {"brown-glass": 30, "paper": 9, "metal": 4},
                            "kaggle2": {"Brown_Glass": 12, "Papers": 20},
                            "web": {"brown glass": 3, "metal": 1}})
    by_key = {g["key"]: g for g in found}
    assert set(by_key) == {"brown glass", "paper"}  # metal is spelled one way
    assert by_key["brown glass"]["suggest"] == {"Brown_Glass": "brown-glass", "brown glass": "brown-glass"}
    assert by_key["brown glass"]["names"]["Brown_Glass"] == {"kaggle2": 12}
    assert by_key["paper"]["suggest"] == {"paper": "Papers"}  # 20 rows beat 9


def test_parse_pairs_rejects_what_is_not_old_eq_new():
    assert parse_pairs(["a=b", "c = d"]) == {"a": "b", "c": "d"}
    with pytest.raises(OptionError, match=r"--map: expected OLD=NEW .*found 'a'"):
        parse_pairs(["a"])
    with pytest.raises(OptionError, match="expected one new name for 'a', found 'b' and 'c'"):
        parse_pairs(["a=b", "a=c"])


def test_read_map_file_yaml_and_csv(tmp_path):
    y = tmp_path / "map.yaml"
    y.write_text("Brown_Glass: brown-glass\nPapers: paper\n")
    assert read_map_file(y) == {"Brown_Glass": "brown-glass", "Papers": "paper"}
    c = tmp_path / "map.csv"
    c.write_text("old,new\nBrown_Glass,brown-glass\n\nPapers,paper\n")
    assert read_map_file(c) == {"Brown_Glass": "brown-glass", "Papers": "paper"}
    bad = tmp_path / "bad.csv"
    bad.write_text("Brown_Glass\n")
    with pytest.raises(OptionError, match="row 1: expected two columns: old,new, found Brown_Glass"):
        read_map_file(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- a\n- b\n")
    with pytest.raises(OptionError, match="expected a mapping of old: new class names, found list"):
        read_map_file(notmap)


def test_compose_and_chains():
    assert compose({"Brown_Glass": "brown-glass"}, {"brown-glass": "glass"}) == {
        "Brown_Glass": "glass", "brown-glass": "glass"}
    # a map back: the rows first called a are a again (the entry goes); those first called b join them
    assert compose({"a": "b"}, {"b": "a"}) == {"b": "a"}
    with pytest.raises(OptionError, match="a=b and b=c"):
        check_map({"a": "b", "b": "c"})


def _rows() -> pd.DataFrame:
    return pd.DataFrame({"sample_id": ["1", "2", "3", "4"], "label": ["Brown_Glass", "paper", "cat", "Brown_Glass"],
                         "original_label": ["Brown_Glass", "paper", "dog", "Brown_Glass"],
                         "label_origin": ["source", "source", "review", "review"], "label_detail": [None] * 4})


def test_apply_map_keeps_the_original_and_undoes_by_removing_the_entry():
    out, changes = apply_map(_rows(), {"Brown_Glass": "brown-glass"}, {"Brown_Glass": "brown-glass"})
    assert out["label"].tolist() == ["brown-glass", "paper", "cat", "brown-glass"]
    assert out["original_label"].tolist() == ["Brown_Glass", "paper", "dog", "Brown_Glass"]  # never rewritten
    assert out["label_origin"].tolist() == ["labelmap", "source", "review", "review"]
    assert out.loc[3, "label_detail"] == "label map: Brown_Glass -> brown-glass"  # a person's label renamed too
    assert [c["sample_id"] for c in changes] == ["1", "4"]
    back, undone = apply_map(out, {})
    assert back["label"].tolist() == ["Brown_Glass", "paper", "cat", "brown-glass"]  # the reviewed row stays
    assert [c["sample_id"] for c in undone] == ["1"]


def test_refresh_conflicts_follows_the_labels():
    m = pd.DataFrame({"dup_group": ["g", "g", "h", "h"], "label": ["a", "b", "c", "c"],
                      "status": ["kept", "dropped", "kept", "dropped"], "reason": [None, "duplicate", None, "duplicate"],
                      "label_conflict": [False, False, True, True]})
    assert refresh_conflicts(m)["label_conflict"].tolist() == [True, True, False, False]
