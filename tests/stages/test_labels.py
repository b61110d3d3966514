"""`curate labels` (issue 16): one class vocabulary across sources, conflicts settled, likely mislabels found."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.errors import OptionError
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.stages.labels import LabelsOptions, labels
from curate.workspace import Workspace


def run(*args: str, ok: bool = True):
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def trash_sources(tmp_path: Path, corpus: Path) -> tuple[Path, Path, Path]:
    """Three trash-like sources from corpus photos: the same two classes spelled three ways, one photo shared."""
    photos = sorted(p for p in (corpus / "photos").glob("imagededup_ukbench0*.jpg") if "_" not in p.stem[11:])[:6]
    assert len(photos) == 6, photos
    s1, s2, s3 = tmp_path / "kaggle1", tmp_path / "kaggle2", tmp_path / "web"
    layout = {s1: {"brown-glass": photos[0:2], "paper": photos[2:3]},
              s2: {"Brown_Glass": photos[3:4], "Papers": [photos[4], photos[0]]},  # photos[0] mislabelled here
              s3: {"brown glass": [photos[0]], "PAPER": [photos[5]]}}
    for src, classes in layout.items():
        for label, files in classes.items():
            (src / label).mkdir(parents=True)
            for f in files:
                shutil.copy2(f, src / label / f.name)
    return s1, s2, s3


def test_three_sources_one_vocabulary_without_reingesting(tmp_path, corpus):
    s1, s2, s3 = trash_sources(tmp_path, corpus)
    ws = tmp_path / "ws"
    res = run("ingest", str(s1), str(s2), str(s3), "--into", str(ws), "--workers", "1", "--json")
    summary = json.loads(res.output)
    assert sorted(summary["label"]) == ["Brown_Glass", "PAPER", "Papers", "brown-glass", "paper"]  # kept rows
    merges = {old: new for g in summary["similar_labels"] for old, new in g["suggest"].items()}
    # the spelling with most rows is kept (the copy of photo 0 in web/brown glass counts too)
    assert merges == {"Brown_Glass": "brown-glass", "brown glass": "brown-glass", "paper": "Papers", "PAPER": "Papers"}
    plain = run("ingest", str(s1), str(s2), str(s3), "--into", str(ws), "--workers", "1")
    assert (f"class names 'brown-glass' (kaggle1: 2), 'Brown_Glass' (kaggle2: 1), 'brown glass' (web: 1) look like "
            f"one class: merge them with `curate labels {ws} --map Brown_Glass=brown-glass --map 'brown glass=brown-glass'`"
            ) in plain.stderr
    before = pd.read_parquet(ws / "manifest.parquet")

    res = run("labels", str(ws), *[f"--map={o}={n}" for o, n in merges.items()])
    assert "2 classes" in res.output
    lines = {ln.split()[0]: ln.split()[1:] for ln in res.output.splitlines()[2:4]}
    assert lines["brown-glass"][0] == "3" and lines["Papers"][0] == "3"  # kept rows (the shared photo kept once)
    after = pd.read_parquet(ws / "manifest.parquet")
    assert len(after) == len(before) and not (after["reason"] == "missing_file").any()  # no row lost or orphaned
    assert set(after["label"].dropna()) == {"brown-glass", "Papers"}
    assert after.set_index("sample_id")["original_label"].equals(before.set_index("sample_id")["original_label"])
    assert json.loads((ws / "labelmap.json").read_text())["map"] == merges
    rec = Workspace.open(ws).runs()[-1]
    assert rec["command"] == "labels" and rec["label_map"]["after"] == merges
    assert {c["old"] for c in rec["label_changes"]} == set(merges)

    # a new file in a renamed class folder, ingested later, gets the map too; nothing else changes
    shutil.copy2(corpus / "photos" / "skimage_coffee.png", s2 / "Brown_Glass" / "new.png")
    run("ingest", str(s1), str(s2), str(s3), "--into", str(ws), "--workers", "1")
    again = pd.read_parquet(ws / "manifest.parquet").set_index("rel_path")
    assert again.loc["Brown_Glass/new.png", "label"] == "brown-glass"
    assert again.loc["Brown_Glass/new.png", "original_label"] == "Brown_Glass"
    assert len(again) == len(before) + 1 and not (again["reason"] == "missing_file").any()

    # undo one entry, then everything
    run("labels", str(ws), "--unmap", "Brown_Glass")
    m = pd.read_parquet(ws / "manifest.parquet")
    assert set(m.loc[m["original_label"] == "Brown_Glass", "label"]) == {"Brown_Glass"}
    assert set(m.loc[m["original_label"] == "PAPER", "label"]) == {"Papers"}
    run("labels", str(ws), "--reset")
    m = pd.read_parquet(ws / "manifest.parquet")
    assert (m["label"] == m["original_label"]).all() and (m["label_origin"] == "source").all()
    assert json.loads((ws / "labelmap.json").read_text())["map"] == {}


def test_label_map_file_at_ingest_and_refusals(tmp_path, skimage_dir):
    src = tmp_path / "src"
    for label, names in {"Cats": ("chelsea.png",), "cat": ("coffee.png",), "rocket": ("rocket.jpg",)}.items():
        (src / label).mkdir(parents=True)
        for n in names:
            shutil.copy2(skimage_dir / n, src / label / n)
    lm = tmp_path / "map.csv"
    lm.write_text("old,new\nCats,cat\n")
    res = run("ingest", str(src), "--into", str(tmp_path / "ws"), "--label-map", str(lm), "--map", "rocket=space",
              "--workers", "1", "--json")
    assert json.loads(res.output)["label"] == {"cat": 2, "space": 1}
    assert "similar_labels" not in json.loads(res.output)  # merged: nothing left to report
    bad = run("labels", str(tmp_path / "ws"), "--unmap", "dog", ok=False)
    assert bad.exit_code == 1
    assert bad.output.startswith("Error: --unmap: expected a name the active map renames (Cats, rocket), found dog")
    bad = run("labels", str(tmp_path / "ws"), "--map", "a=b", "--map", "b=c", ok=False)
    assert "expected each new name not renamed again in the same map, found a=b and b=c" in bad.output
    bad = run("labels", str(tmp_path / "ws"), "--resolve", "vote", ok=False)
    assert bad.output == "Error: --resolve: expected majority, source:NAME or keep, found vote\n"


def dup_workspace(tmp_path: Path, skimage_dir: Path, labels_by_source: dict[str, str]) -> Workspace:
    """The same photo in several sources under different labels (an exact-duplicate group), plus a loner."""
    specs = []
    for name, label in labels_by_source.items():
        d = tmp_path / name / label
        d.mkdir(parents=True)
        shutil.copy2(skimage_dir / "chelsea.png", d / "chelsea.png")
        specs.append(SourceSpec(tmp_path / name, name=name, layout="folder"))
    (tmp_path / "other" / "rocket").mkdir(parents=True)
    shutil.copy2(skimage_dir / "rocket.jpg", tmp_path / "other" / "rocket" / "rocket.jpg")
    specs.append(SourceSpec(tmp_path / "other", name="other", layout="folder"))
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions(specs, workers=1))
    return ws


def test_the_kept_copy_carries_the_groups_majority_label(tmp_path, skimage_dir):
    # the first source (highest priority) has the odd label out: before the label vote it was kept
    ws = dup_workspace(tmp_path, skimage_dir, {"a": "dog", "b": "cat", "c": "cat"})
    m = ws.read_manifest()
    kept = m[(m["status"] == "kept") & (m["source"] != "other")]
    assert kept["source"].tolist() == ["b"] and kept["label"].tolist() == ["cat"]
    assert m.loc[m["source"] != "other", "label_conflict"].all()


@pytest.mark.parametrize("policy, label, changed", [
    ("majority", "cat", ["a"]),   # 2 cat vs 1 dog
    ("source:a", "dog", ["b", "c"]),  # the trusted source's label
    ("keep", "cat", ["a"]),       # the kept copy's label (b, by the label vote)
])
def test_resolve_settles_each_conflict_as_a_recorded_decision(tmp_path, skimage_dir, policy, label, changed):
    ws = dup_workspace(tmp_path, skimage_dir, {"a": "dog", "b": "cat", "c": "cat"})
    res = run("labels", str(ws.root), "--resolve", policy, "--json")
    out = json.loads(res.output)
    assert out["resolve"]["groups_settled"] == 1 and out["conflicts_left"] == 0
    m = ws.read_manifest()
    group = m[m["source"] != "other"]
    assert set(group["label"]) == {label} and not group["label_conflict"].any()
    moved = group[group["label_origin"] == "labels"]
    assert sorted(moved["source"]) == changed
    assert moved["label_detail"].str.contains(f"settled by {policy}").all()
    rec = ws.runs()[-1]
    assert sorted(c["source"] for c in rec["label_changes"]) == changed
    assert all(c["by"] == f"resolve {policy}" for c in rec["label_changes"])


def test_resolve_never_settles_silently(tmp_path, skimage_dir):
    ws = dup_workspace(tmp_path, skimage_dir, {"a": "dog", "b": "cat"})
    res = run("labels", str(ws.root), "--resolve", "majority")
    assert "not settled (no majority: {'dog': 1, 'cat': 1})" in res.stderr or \
        "not settled (no majority: {'cat': 1, 'dog': 1})" in res.stderr
    res = run("labels", str(ws.root), "--resolve", "source:zzz", "--json")
    assert json.loads(res.output)["resolve"]["unsettled_groups"][0]["why"] == "no member from source zzz"
    m = ws.read_manifest()
    assert set(m.loc[m["source"] != "other", "label"]) == {"dog", "cat"}  # nothing changed
    # a label a person set in review is never overwritten by a policy
    m.loc[m["source"] == "a", "label_origin"] = "review"
    with ws.lock():
        ws.commit(m)
    res = run("labels", str(ws.root), "--resolve", "source:b", "--json")
    assert "not overwritten" in json.loads(res.output)["resolve"]["unsettled_groups"][0]["why"]


def flipped_workspace(tmp_path: Path, corpus: Path) -> tuple[Workspace, set[str]]:
    """Portraits (faces_by_person) and scikit-image's science photos, with 3 of each class in the wrong folder."""
    import skimage.data

    people = sorted((corpus / "faces_by_person").rglob("*.jpg"))[:24]
    # the photos shipped in the package (skimage.data_dir points at a download cache when pooch is installed)
    science = sorted(p for p in Path(skimage.data.__file__).parent.iterdir() if p.suffix in (".png", ".jpg"))[:24]
    src = tmp_path / "src"
    flipped = set()
    for cls, files in (("person", people), ("science", science)):
        other = "science" if cls == "person" else "person"
        for i, f in enumerate(files):
            label = other if i % 8 == 0 else cls
            (src / label).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, src / label / f"{cls}_{i}{f.suffix}")
            if label != cls:
                flipped.add(f"{label}/{cls}_{i}{f.suffix}")
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, name="src", layout="folder")], workers=1))
    return ws, flipped


def test_find_issues_ranks_flipped_labels_first_and_apply_fixes_them(tmp_path, corpus):
    ws, flipped = flipped_workspace(tmp_path, corpus)
    res = run("labels", str(ws.root), "--find-issues", "--workers", "1", "--json")
    info = json.loads(res.output)["find_issues"]
    m = ws.read_manifest()
    scored = m[m["label_issue_score"].notna()]
    assert info["scored"] == len(scored) > 40
    wrong = scored["rel_path"].isin(flipped)
    # the flipped rows score higher than the rest, and most of them are flagged with the right class
    assert scored.loc[wrong, "label_issue_score"].mean() > scored.loc[~wrong, "label_issue_score"].mean() + 0.2
    flagged = scored[scored["suggested_label"].notna()]
    hits = flagged[flagged["rel_path"].isin(flipped)]
    assert len(hits) >= len(flipped) // 2
    assert (hits["suggested_label"] != hits["label"]).all()
    assert all(r.split("/")[1].split("_")[0] == s for r, s in zip(hits["rel_path"], hits["suggested_label"], strict=True))
    assert [f["score"] for f in info["flagged"]] == sorted((f["score"] for f in info["flagged"]), reverse=True)

    top = run("labels", str(ws.root), "--apply", "relabel", "--top", "2", "--json")
    assert json.loads(top.output)["apply"] == {"mode": "relabel", "rows": 2}
    m2 = ws.read_manifest().set_index("sample_id")
    changed = [c["sample_id"] for c in ws.runs()[-1]["label_changes"]]
    best = flagged.sort_values("label_issue_score", ascending=False)["sample_id"].head(2).tolist()
    assert changed == best
    assert (m2.loc[changed, "label"] == flagged.set_index("sample_id").loc[changed, "suggested_label"]).all()
    assert m2.loc[changed, "label_detail"].str.startswith("likely mislabel").all()
    assert (m2.loc[changed, "original_label"] != m2.loc[changed, "label"]).all()  # undo: --reset

    drop = run("labels", str(ws.root), "--apply", "drop", "--threshold", "0.0", "--json")
    n = json.loads(drop.output)["apply"]["rows"]
    m3 = ws.read_manifest()
    assert n == len(flagged) - 2 and (m3["reason"] == "mislabelled").sum() == n
    assert (m3.loc[m3["reason"] == "mislabelled", "decided_by"] == "labels").all()


def test_find_issues_needs_two_classes_and_apply_needs_scores(tmp_path, skimage_dir):
    src = tmp_path / "src" / "cat"
    src.mkdir(parents=True)
    for n in ("chelsea.png", "coffee.png"):
        shutil.copy2(skimage_dir / n, src / n)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(tmp_path / "src", layout="folder")], workers=1))
    with pytest.raises(OptionError, match="expected kept images of at least 2 classes with 2 or more each, found 1"):
        ws.run_stage("labels", labels, LabelsOptions(find_issues=True, workers=1))
    with pytest.raises(OptionError, match="expected rows scored by --find-issues, found none"):
        ws.run_stage("labels", labels, LabelsOptions(apply="relabel"))
    with pytest.raises(OptionError, match="--threshold/--top: expected --apply"):
        ws.run_stage("labels", labels, LabelsOptions(top=3))


def test_find_issues_with_a_random_init_backbone(tmp_path, skimage_dir):
    """The torchvision path (no weights can be downloaded here: random initialisation, said so)."""
    src = tmp_path / "src"
    for label, names in {"cat": ("chelsea.png", "coffee.png", "astronaut.png"),
                         "grey": ("camera.png", "moon.png", "text.png")}.items():
        (src / label).mkdir(parents=True)
        for n in names:
            shutil.copy2(skimage_dir / n, src / label / n)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, layout="folder")], workers=1))
    res = ws.run_stage("labels", labels, LabelsOptions(find_issues=True, features="resnet18", folds=3))
    assert res.summary["find_issues"]["weights"] == "random-init"
    assert res.manifest["label_issue_score"].notna().sum() == 6


def test_labels_prints_the_class_list_per_source_and_split(tmp_path, skimage_dir):
    ws = dup_workspace(tmp_path, skimage_dir, {"a": "dog", "b": "cat"})
    res = run("labels", str(ws.root))
    # a tie (dog vs cat) is no majority: the first source's copy (dog) is kept
    assert res.output.splitlines()[1].split() == ["class", "kept", "a", "other", "[(none)]"]
    table = {ln.split()[0]: ln.split()[1:] for ln in res.output.splitlines()[2:]}
    assert table == {"dog": ["1", "1", "0", "1"], "rocket": ["1", "0", "1", "1"]}
    assert len(ws.runs()) == 1  # only looking: nothing recorded


def test_box_classes_are_compared_and_mapped_too(tmp_path, skimage_dir):
    """Detection sources: box classes spelled two ways are reported at ingest and merged by the map; --reset undoes it."""
    for name, cls, photo in (("a", "Brown_Glass", "chelsea.png"), ("b", "brown-glass", "coffee.png")):
        d = tmp_path / name
        d.mkdir()
        shutil.copy2(skimage_dir / photo, d / photo)
        (d / "boxes.csv").write_text(f"file,x1,y1,x2,y2,label\n{photo},10,10,100,90,{cls}\n{photo},120,20,200,100,{cls}\n")
    ws = tmp_path / "ws"
    res = run("ingest", str(tmp_path / "a" / "boxes.csv"), str(tmp_path / "b" / "boxes.csv"), "--source", "a",
              "--source", "b", "--into", str(ws), "--workers", "1", "--json")
    # 2 boxes each: the tie goes to the first source's spelling
    assert json.loads(res.output)["similar_labels"][0]["suggest"] == {"brown-glass": "Brown_Glass"}
    res = run("labels", str(ws), "--map", "brown-glass=Brown_Glass", "--json")
    assert json.loads(res.output)["boxes_renamed"] == 2
    boxes = pd.read_parquet(ws / "annotations.parquet")
    assert boxes["label"].tolist() == ["Brown_Glass"] * 4
    assert sorted(boxes["original_label"]) == ["Brown_Glass", "Brown_Glass", "brown-glass", "brown-glass"]
    run("labels", str(ws), "--reset")
    boxes = pd.read_parquet(ws / "annotations.parquet")
    assert (boxes["label"] == boxes["original_label"]).all()
