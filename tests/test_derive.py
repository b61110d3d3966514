"""Derived images: stable ids, lossless or JPEG by the source, content-addressed storage, boxes carried."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from curate.derive import carry_boxes_into_crops, derived_id, encode_image_format, store_derived, upsert_rows
from curate.schema import MANIFEST_COLUMNS, conform
from curate.workspace import Workspace


@pytest.mark.parametrize("source_format, ext", [
    ("JPEG", "jpg"), ("MPO", "jpg"), ("HEIF", "jpg"),  # lossy sources: one more JPEG at q95 4:4:4
    ("PNG", "png"), ("TIFF", "png"), ("GIF", "png"), (None, "png"),  # lossless or unknown: PNG
])
def test_encode_format_follows_the_source(source_format, ext):
    assert encode_image_format(source_format) == ext


def test_derived_id_is_stable_and_depends_on_every_parameter():
    t = {"op": "crop", "crop_xyxy": [1, 2, 3, 4]}
    assert derived_id("p", t) == derived_id("p", dict(reversed(list(t.items()))))  # key order does not matter
    assert derived_id("p", t) != derived_id("p", {**t, "crop_xyxy": [1, 2, 3, 5]})
    assert derived_id("p", t) != derived_id("q", t)


def test_store_derived_is_content_addressed_and_traces_back(tmp_path, skimage_dir):
    ws = Workspace.create(tmp_path / "ws")
    parent = {"sample_id": "p1", "source": "s", "origin_path": "/src/a.png", "label": "cat", "label_origin": "source",
              "split": "train", "rel_path": "a.png", "format": "PNG"}
    img = Image.open(skimage_dir / "chelsea.png").crop((10, 10, 110, 60))
    row = store_derived(ws, parent, img, {"op": "crop", "crop_xyxy": [10, 10, 110, 60]}, layout="crop")
    again = store_derived(ws, parent, img, {"op": "crop", "crop_xyxy": [10, 10, 110, 60]}, layout="crop")
    assert row["path"] == again["path"] and row["path"].endswith(".png")  # same pixels, same object
    assert (row["parent_id"], row["origin_path"], row["width"], row["height"]) == ("p1", "/src/a.png", 100, 50)
    assert json.loads(row["transform"])["encoding"] == {"ext": "png", "quality": None}
    assert len(list(ws.objects_dir.rglob("*.png"))) == 1
    relabelled = store_derived(ws, parent, img, {"op": "crop", "crop_xyxy": [10, 10, 110, 60]}, layout="crop",
                               label="whisker")
    assert (relabelled["label"], relabelled["label_origin"]) == ("whisker", "crop")
    m = upsert_rows(conform(pd.DataFrame([{**row, "status": "dropped", "reason": "superseded"}]), MANIFEST_COLUMNS),
                    [row])
    assert len(m) == 1 and m["status"].item() == "dropped"  # an existing row keeps the decisions made on it


def test_boxes_are_carried_into_new_crops_only():
    ann = pd.DataFrame({"sample_id": ["p", "p"], "label": ["cup", "spoon"], "x1": [10.0, 90.0], "y1": [10.0, 90.0],
                        "x2": [50.0, 99.0], "y2": [50.0, 99.0], "origin": ["coco", "coco"]})
    crop = {"sample_id": "c", "parent_id": "p", "transform": json.dumps({"crop_xyxy": [0, 0, 40, 40]})}
    old = {"sample_id": "o", "parent_id": "p", "transform": json.dumps({"crop_xyxy": [0, 0, 60, 60]})}
    out = carry_boxes_into_crops(ann, [crop, old], created={"c"})
    moved = out[out["sample_id"] == "c"]
    assert moved[["label", "x1", "y1", "x2", "y2"]].values.tolist() == [["cup", 10.0, 10.0, 40.0, 40.0]]
    assert (out["sample_id"] == "o").sum() == 0  # not created by this run: nothing doubled


# -- the transform-stage skeleton (faces, square and crop share it) -------------------------------------

def _parent(path, sid="p1"):
    return {"sample_id": sid, "source": "s", "path": str(path), "origin_path": str(path), "sha256": "x",
            "label": "cat", "label_origin": "source", "split": "train", "rel_path": path.name, "format": "PNG"}


def test_open_parent_reads_or_says_why_not(tmp_path, skimage_dir):
    from curate.derive import DeriveResult, open_parent

    good = tmp_path / "cat.png"
    Image.open(skimage_dir / "chelsea.png").save(good)
    res = DeriveResult("p1")
    img = open_parent(res, _parent(good), str(tmp_path))
    assert img is not None and img.size == (451, 300) and res.error is None
    # measured at another size: its boxes and plan no longer fit
    res = DeriveResult("p1")
    assert open_parent(res, _parent(good), str(tmp_path), expected_wh=(300, 451)) is None
    assert res.reason == "unreadable"
    assert res.error == f"{good}: size: expected 300x451 as in the manifest, found 451x300 (re-run `curate ingest`)"
    # cut in half: the decode fails
    bad = tmp_path / "half.png"
    bad.write_bytes(good.read_bytes()[:5000])
    res = DeriveResult("p1")
    assert open_parent(res, _parent(bad), str(tmp_path)) is None
    assert res.reason == "unreadable" and str(bad) in (res.error or "")
    # gone
    res = DeriveResult("p1")
    assert open_parent(res, _parent(tmp_path / "gone.png"), str(tmp_path)) is None
    assert res.reason == "missing_file" and "gone.png" in (res.error or "")


def test_a_crashed_parent_is_dropped_with_the_stage_to_rerun(tmp_path):
    from curate.derive import DeriveResult, Outcome
    from curate.parallel import WorkerCrash

    res = DeriveResult.crashed(_parent(tmp_path / "a.png"), WorkerCrash("worker process killed by signal 11 "
                                                                      "(SIGSEGV)", 3), "squaring it", "square")
    assert (res.reason, res.rows) == ("worker_crashed", [])
    assert res.error == (f"{tmp_path / 'a.png'}: worker process killed by signal 11 (SIGSEGV) (3 attempts) while "
                         "squaring it (re-run `curate square` to try again)")
    done = Outcome("square")
    assert done.failed(res) and not done.failed(DeriveResult("p2"))
    assert done.decisions == {"p1": ("dropped", "worker_crashed", res.error, "square")}
    assert (done.counts["worker_crashed"], done.counts["unreadable"], done.warnings) == (1, 0, [res.error])


def test_commit_adds_carries_revives_and_marks_stale(tmp_path, skimage_dir):
    from curate.derive import DeriveResult, Outcome, commit

    ws = Workspace.create(tmp_path / "ws")
    src = tmp_path / "cat.png"
    Image.open(skimage_dir / "chelsea.png").save(src)
    parent = {**_parent(src), "status": "kept", "decided_by": "ingest", "layout": "flat", "width": 451, "height": 300}
    img = Image.open(src)

    def crop_row(box):
        return store_derived(ws, parent, img.crop(tuple(box)), {"op": "crop", "crop_xyxy": box}, layout="crop")

    old, kept_again, new = crop_row([0, 0, 100, 100]), crop_row([100, 0, 200, 100]), crop_row([200, 0, 300, 100])
    stale_detail = "stale: not produced by the latest `curate crop` run (its options or input changed)"
    manifest = conform(pd.DataFrame([parent, old, {**kept_again, "status": "dropped", "reason": "superseded",
                                                   "detail": stale_detail, "decided_by": "crop"}]), MANIFEST_COLUMNS)
    ann = pd.DataFrame({"sample_id": ["p1"], "label": ["eye"], "x1": [210.0], "y1": [10.0], "x2": [250.0],
                        "y2": [50.0], "origin": ["coco"]})
    done = Outcome("crop")
    assert done.add(DeriveResult("p1", rows=[new])) == [new["sample_id"]] and done.new_rows == [new]
    done.produced["p1"] = [kept_again["sample_id"], new["sample_id"]]  # as if one was found stored, one made
    done.decisions["p1"] = ("dropped", "superseded", "2 box patches", "crop")
    out, ann_out, created = commit(manifest, ann, done, stale_parents=["p1"])
    by = out.set_index("sample_id")
    assert created == {new["sample_id"]} and len(out) == 4
    assert by.loc["p1", ["status", "reason"]].tolist() == ["dropped", "superseded"]
    assert by.loc[new["sample_id"], "status"] == "kept"
    assert by.loc[kept_again["sample_id"], "status"] == "kept"  # produced again: kept again
    assert by.loc[old["sample_id"], ["status", "reason"]].tolist() == ["dropped", "superseded"]  # no longer made
    assert str(by.loc[old["sample_id"], "detail"]).startswith("stale:")
    assert (done.counts["revived"], done.counts["stale"]) == (1, 1)
    carried = ann_out[ann_out["sample_id"] == new["sample_id"]]
    assert carried[["x1", "y1", "x2", "y2"]].values.tolist() == [[10.0, 10.0, 50.0, 50.0]]  # in the crop's frame
    # no carry: the annotations stay as they were
    _, same, _ = commit(manifest, ann, Outcome("crop"), stale_parents=[], carry=None)
    assert same is ann


def test_plan_helpers(tmp_path, skimage_dir):
    from curate.derive import (
        PARENT_FIELDS,
        DeriveResult,
        all_stored,
        in_input_order,
        parent_dicts,
        stored_paths,
    )

    obj = tmp_path / "o.png"
    Image.open(skimage_dir / "chelsea.png").save(obj)
    m = conform(pd.DataFrame([{**_parent(obj), "status": "kept", "decided_by": "ingest", "layout": "flat",
                               "width": 451, "height": 300, "label": None}]), MANIFEST_COLUMNS)
    (d,) = parent_dicts(m, extra=("width",))
    assert list(d) == [*PARENT_FIELDS, "width"] and d["label"] is None and d["width"] == 451  # nulls as None
    paths = stored_paths(m)
    assert all_stored(["p1"], paths) and not all_stored(["p1", "zz"], paths)
    obj.unlink()
    assert not all_stored(["p1"], paths)  # in the manifest, but its object is gone: made again
    shuffled = [DeriveResult("b"), DeriveResult("c"), DeriveResult("a")]  # as a pool returns them
    assert [r.sample_id for r in in_input_order(shuffled, ["a", "b", "c"])] == ["a", "b", "c"]
