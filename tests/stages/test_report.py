"""``curate report``: one self-contained HTML page of what happened to a workspace.

Workspaces are built from real photos: the shared corpus (``corpus``) ingested
for real, and, for the sections whose stages other modules own (split,
balance, faces), rows written through the manifest contract exactly as those
stages write them (``curate.derive.store_derived`` for derived images, reasons
from the closed set, a ``runs/`` record per command). Core tests use
scikit-image's bundled photos.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from curate.cli import cli
from curate.derive import store_derived, upsert_rows
from curate.errors import OptionError
from curate.report.thumbs import ThumbnailPool, thumbnail_bytes
from curate.stages.check import CheckOptions, check
from curate.stages.ingest import IngestOptions, SourceSpec, ingest
from curate.stages.report import ReportOptions, report
from curate.workspace import Workspace
from tests.report.test_render import (  # the page checks live with the renderer
    assert_valid_and_self_contained,
    table,
)

SECTIONS = ["counts", "balance", "sizes", "duplicates", "dropped", "faces", "leakage", "runs"]


# ---------------------------------------------------------------------------
# Workspaces
# ---------------------------------------------------------------------------

def _ingest_corpus(root: Path, corpus: Path) -> Workspace:
    ws = Workspace.create(root)
    specs = [SourceSpec(corpus / s) for s in ("faces_by_person", "faces_misc", "photos")]
    ws.run_stage("ingest", ingest, IngestOptions(specs, workers=2))
    return ws


@pytest.fixture(scope="module")
def corpus_ws(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The corpus ingested (faces_by_person, faces_misc, photos): only ingest has run."""
    return _ingest_corpus(tmp_path_factory.mktemp("report") / "ws", corpus)


def _rows(m: pd.DataFrame, source: str, rel_prefix: str) -> pd.DataFrame:
    return m[(m["source"] == source) & m["rel_path"].str.startswith(rel_prefix)].sort_values("rel_path")


def simulate_later_stages(ws: Workspace) -> dict[str, object]:
    """Write split, balance and faces decisions through the manifest contract.

    Those stages belong to other modules; the report relies only on the rows
    and runs they leave, which are written here the same way: splits, a
    ``balanced_out`` drop, augmented and face-crop derived rows made from the
    real photos by ``store_derived``, superseded parents, a ``no_face`` drop,
    a label conflict, and one run record per command. Returns what was done.
    """
    m = ws.read_manifest()
    kept = m["status"] == "kept"
    # split: everything kept in train, a few rows to val/test.
    m.loc[kept, "split"] = "train"
    for rel, split in (("jennifer/img3.jpg", "val"), ("jack/img16.jpg", "val"), ("mark/img13.jpg", "test")):
        m.loc[(m["source"] == "faces_by_person") & (m["rel_path"] == rel), "split"] = split
    # The exact-duplicate group of three: the source had put one copy in test.
    group = m[m["rel_path"].str.startswith("imagededup_ukbench09380.")].sort_values("rel_path")
    m.loc[group.index[1], "split"] = "test"  # .jpg, a dropped duplicate
    m.loc[group.index[0], "split"] = "train"  # .bmp, the kept representative
    # A label conflict: the two cleanvision copies labelled differently.
    pair = m[m["dup_group"].notna() & m["rel_path"].str.startswith("cleanvision_image_")]
    m.loc[pair.index, "label"] = ["cat", "dog"]
    m.loc[pair.index, "label_conflict"] = True

    # balance (train): 3 of angelina's 8 dropped, 2 augmented copies of alex_lacamoire's only photo.
    angelina = _rows(m, "faces_by_person", "angelina/")
    out = angelina.index[:3]
    m.loc[out, ["status", "reason", "decided_by", "detail"]] = ["dropped", "balanced_out", "balance", "target 5"]
    alex = m.loc[_rows(m, "faces_by_person", "alex_lacamoire/").index[0]]
    img = ImageOps.exif_transpose(Image.open(alex["path"])).convert("RGB")
    aug = [store_derived(ws, alex, ImageOps.mirror(img), {"op": "augment", "hflip": True}, layout="augment"),
           store_derived(ws, alex, img.rotate(5), {"op": "augment", "rotate_deg": 5}, layout="augment")]
    for row in aug:  # as curate balance marks its copies
        row["decided_by"] = "balance"
    m = upsert_rows(m, aug)

    # faces: crops of three obama photos (two from the first), parents superseded; one no_face.
    obama = _rows(m, "faces_by_person", "obama/").head(3)
    crops = []
    for i, (_, parent) in enumerate(obama.iterrows()):
        pim = ImageOps.exif_transpose(Image.open(parent["path"])).convert("RGB")
        w, h = pim.size
        boxes = [(w // 4, h // 8, 3 * w // 4, 5 * h // 8)] + ([(0, 0, w // 2, h // 2)] if i == 0 else [])
        for box in boxes:
            crops.append(store_derived(ws, parent, pim.crop(box), {"op": "face_crop", "box_xyxy": list(box)},
                                       layout="faces"))
    m = upsert_rows(m, crops)
    m.loc[m["sample_id"].isin(obama["sample_id"]), ["status", "reason", "decided_by"]] = \
        ["dropped", "superseded", "faces"]
    # Two crops of one photo end up in different splits: a leak the report must show.
    first_two = m[m["parent_id"] == obama["sample_id"].iloc[0]].sort_values("sample_id").index
    m.loc[first_two[1], "split"] = "test"
    no_face = m[(m["source"] == "photos") & (m["rel_path"] == "skimage_coffee.png")].index
    m.loc[no_face, ["status", "reason", "decided_by"]] = ["dropped", "no_face", "faces"]
    ws.write_manifest(m)
    for cmd, opts in (("split", {"ratios": "8:1:1", "seed": 0}),
                      ("balance", {"target": 5, "strategy": "both", "splits": ["train"]}),
                      ("faces", {"select": "all", "margin": 0.2})):
        ws.record_run(cmd, opts, summary={"simulated_for": "test_report"})
    return {"crops": len(crops), "augmented": len(aug), "no_face": int(len(no_face))}


def _report(ws: Workspace, out: Path, **kw: object) -> tuple[str, dict[str, object]]:
    res = ws.run_stage("report", report, ReportOptions(out=out, workers=2, **kw))  # type: ignore[arg-type]
    return out.read_text(encoding="utf-8"), res.summary


@pytest.fixture(scope="module")
def corpus_report(corpus_ws: Workspace) -> tuple[str, dict[str, object]]:
    return _report(corpus_ws, corpus_ws.root.parent / "corpus-report.html")


@pytest.fixture(scope="module")
def staged(corpus_ws: Workspace, corpus_report: object) -> tuple[Workspace, dict[str, object], str, dict[str, object]]:
    """A copy of the ingested corpus after split, balance and faces; its report page and summary."""
    ws = Workspace.open(shutil.copytree(corpus_ws.root, corpus_ws.root.parent / "staged"))
    done = simulate_later_stages(ws)
    done["check"] = ws.run_stage("check", check, CheckOptions()).summary  # the real stage: recorded in runs/
    page, summary = _report(ws, ws.root.parent / "staged-report.html")
    return ws, done, page, summary


# ---------------------------------------------------------------------------
# The report of a workspace ingested from ../shared/data
# ---------------------------------------------------------------------------

def test_report_of_ingested_corpus_has_every_section_and_the_manifest_numbers(corpus_ws, corpus_report):
    page, summary = corpus_report
    doc = assert_valid_and_self_contained(page)
    m = corpus_ws.read_manifest()

    assert [i for i in doc.ids if i in SECTIONS] == SECTIONS
    # Stages that have not run say so instead of vanishing.
    assert doc.section_ran == {"counts": "yes", "balance": "no", "sizes": "yes", "duplicates": "no",
                               "dropped": "yes", "faces": "no", "leakage": "no", "runs": "yes"}
    assert "curate balance</code> has not run" in page
    assert "curate faces</code> has not run" in page
    assert "curate split</code> has not run" in page
    assert summary["sections"]["faces"] == "not run"

    status = table(doc, "table-status")
    assert {k: int(v[0]) for k, v in status.items()} == m["status"].value_counts().to_dict()
    reasons = table(doc, "table-reason")
    assert {k: int(v[0]) for k, v in reasons.items()} == m["reason"].value_counts().to_dict()
    assert reasons["truncated"][2] == "the image data ends early; the decoder ran out of bytes"
    sources = table(doc, "table-source")
    for name, g in m.groupby("source"):
        assert sources[str(name)][:3] == [str(len(g)), str((g["status"] == "kept").sum()),
                                          str((g["status"] == "dropped").sum())]
    labels = table(doc, "table-label")
    kept = m[m["status"] == "kept"]
    assert labels["angelina"][-1] == str((kept["label"] == "angelina").sum()) == "8"
    assert labels["(none)"][-1] == str(kept["label"].isna().sum())

    # The corpus's exact-copy group of three (SOURCES.md: the .png and .bmp are the same JPEG bytes).
    dups = page[page.index('id="duplicates"'):page.index('id="dropped"')]
    (group,) = [g for g in dups.split('<div class="group">') if "kept: photos/imagededup_ukbench09380.bmp" in g]
    assert group.startswith("<h4>3 rows · kept: photos/imagededup_ukbench09380.bmp 640×480</h4>")
    captions = re.findall(r'<span class="badge (\w+)">(\w+)</span> ([^<]+)</div>', group)
    assert captions[0] == ("kept", "kept", "imagededup_ukbench09380.bmp")
    assert sorted(c[2] for c in captions[1:]) == ["imagededup_ukbench09380.jpg", "imagededup_ukbench09380.png"]
    assert all(c[1] == "dup" for c in captions[1:])
    assert doc.images["duplicates"] == int(m["dup_group"].notna().sum()) == 5

    # Dropped: undecodable files are listed by path, decodable ones get a thumbnail.
    dropped = page[page.index('id="dropped"'):page.index('id="faces"')]
    assert "<code>photos/pillow_truncated_jpeg.jpg</code>: OSError: image file is truncated" in dropped
    assert "<code>photos/skimage_truncated.jpg</code>" in dropped
    assert "<code>faces_misc/faces.csv</code>: content is text, not an image" in dropped
    assert 'alt="skimage_no_time_for_that_tiny.gif"' in dropped
    pictured = m[(m["status"] == "dropped") & m["reason"].isin(["too_small", "bad_aspect", "duplicate"])]
    assert doc.images["dropped"] == len(pictured)

    runs = doc.tables["table-runs"]
    assert [r[2] for r in runs[1:]] == ["ingest"]
    assert summary["thumbnails_failed"] == 0
    assert summary["bytes"] == len(page.encode()) < 2_000_000


def test_report_after_split_balance_and_faces(staged):
    _ws, done, page, summary = staged
    doc = assert_valid_and_self_contained(page)
    assert all(doc.section_ran[s] == "yes" for s in SECTIONS if s != "duplicates")  # dedupe itself never ran

    # Balance: before = kept not made by balance + balanced_out, over train.
    bal = table(doc, "table-balance")
    assert bal["angelina"] == ["8", "3", "0", "5"]
    assert bal["alex_lacamoire"] == ["1", "0", "2", "3"]
    text = "".join(doc.text)
    assert "Split(s) balanced: <b>train</b>" in page
    assert 'target=5  strategy="both"  splits=["train"]' in text

    # Faces: 4 crops from 3 photos, one photo with two faces, one no_face; every crop drawn.
    assert f"<b>{done['crops']} face crops</b> from 3 images, 4 kept; 1 image dropped as <code>no_face</code>" in page
    assert table(doc, "table-faces-per-image") == {"1": ["2"], "2": ["1"]}
    assert doc.images["faces"] == done["crops"] == 4

    # Leakage: the two crops of one photo in train and test; the source's cross-split duplicate
    # group is resolved (one member kept); the cleanvision pair is a label conflict.
    checks = table(doc, "table-leakage")
    assert checks["copies of one source file kept in more than one split"] == ["1", "LEAK"]
    assert checks["duplicate groups whose members carry more than one split"] == ["1", "resolved (one member kept)"]
    assert checks["duplicate groups with kept rows in more than one split"] == ["0", "ok"]
    assert checks["identical files (sha256) kept in more than one split"] == ["0", "ok"]
    assert checks["label conflicts (duplicate groups with different labels)"] == ["1", "conflict"]
    assert list(table(doc, "table-label-conflicts").values()) == [["2", "cat ×1, dog ×1"]]
    assert list(table(doc, "table-groups-across-splits").values())[0][:2] == ["3", "train, test"]
    assert "1 leak(s) across splits among kept rows." in page
    # the last `curate check` run is shown with what it found
    last_check = page[page.index("<h3>Last <code>curate check</code></h3><pre>"):]
    last_check = html.unescape(last_check[:last_check.index("</pre>")])
    assert done["check"]["failed"] and all(f'"{name}"' in last_check for name in done["check"]["failed"])

    # Runs, oldest first, with their options.
    runs = doc.tables["table-runs"][1:]
    assert [r[2] for r in runs] == ["ingest", "split", "balance", "faces", "check"]
    assert 'ratios="8:1:1"' in runs[1][5]
    assert summary["sections"] == {s: "shown" for s in SECTIONS} | {"duplicates": "not run"}


# ---------------------------------------------------------------------------
# Thumbnails
# ---------------------------------------------------------------------------

def test_thumbnail_applies_exif_orientation_and_stays_small(skimage_dir, tmp_path):
    src = Image.open(skimage_dir / "chelsea.png").convert("RGB")  # 451x300, landscape
    big = src.resize((src.width * 8, src.height * 8))  # a 3608x2400 JPEG: decoded at 1/8 scale
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: portrait
    path = tmp_path / "rotated.jpg"
    big.save(path, quality=90, exif=exif)
    data = thumbnail_bytes(path, size_px=96, quality=70)
    with Image.open(__import__("io").BytesIO(data)) as th:
        assert th.format == "JPEG"
        assert th.height == 96 and th.width in (63, 64)  # portrait (2400x3608 displayed), longer side 96
        # Same picture as the full decode rotated by Pillow itself.
        ref = ImageOps.exif_transpose(Image.open(path)).convert("RGB").resize(th.size)
        diff = np.abs(np.asarray(th.convert("RGB"), dtype=int) - np.asarray(ref, dtype=int)).mean()
        assert diff < 12
    assert len(data) < 6_000


def test_thumbnail_pool_gives_none_for_files_that_cannot_be_decoded(skimage_dir, tmp_path):
    good = skimage_dir / "astronaut.png"
    cut = tmp_path / "cut.jpg"
    Image.open(skimage_dir / "rocket.jpg").save(cut, quality=90)
    cut.write_bytes(cut.read_bytes()[:2000])  # truncated JPEG
    text = tmp_path / "page.jpg"
    text.write_text("<html>not an image</html>")
    with ThumbnailPool(workers=2) as pool:
        pool.submit({"good": str(good), "cut": str(cut), "text": str(text), "gone": str(tmp_path / "gone.jpg")})
        uris = pool.results()
    assert uris["good"] is not None and uris["good"].startswith("data:image/jpeg;base64,")
    assert uris == {"good": uris["good"], "cut": None, "text": None, "gone": None}


# ---------------------------------------------------------------------------
# Options and the command line
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def skimage_ws(skimage_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace.create(tmp_path_factory.mktemp("report-sk") / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(skimage_dir, "sk", "flat")], workers=2))
    return ws


def test_out_must_not_be_a_folder(skimage_ws, tmp_path):
    with pytest.raises(OptionError) as e:
        skimage_ws.run_stage("report", report, ReportOptions(out=tmp_path))
    assert str(e.value) == (f"--out: expected a file name for the HTML report, found a folder: {tmp_path} "
                            "(add a file name, e.g. --out report.html)")


def test_option_out_of_range_is_refused(skimage_ws):
    with pytest.raises(OptionError, match=r"--thumb-px: expected 16\.\.512, found 4"):
        skimage_ws.run_stage("report", report, ReportOptions(thumb_px=4))


def test_cli_writes_the_report_prints_where_and_changes_nothing_in_the_workspace(skimage_ws, tmp_path):
    runs_before = sorted(p.name for p in skimage_ws.runs_dir.iterdir())
    manifest_mtime = skimage_ws.manifest_path.stat().st_mtime_ns
    out = tmp_path / "sub" / "r.html"
    res = CliRunner().invoke(cli, ["report", str(skimage_ws.root), "--out", str(out), "--samples", "2"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"report written to {out} (")
    assert out.exists() and "<h2>Counts</h2>" in out.read_text()
    assert sorted(p.name for p in skimage_ws.runs_dir.iterdir()) == runs_before  # not recorded as a run
    assert skimage_ws.manifest_path.stat().st_mtime_ns == manifest_mtime
    assert not (skimage_ws.root / "report.html").exists()


def test_default_out_is_inside_the_workspace(tmp_path):
    ws = Workspace.create(tmp_path / "ws")  # empty: nothing ingested yet
    res = ws.run_stage("report", report, ReportOptions(workers=1))
    assert Path(str(res.summary["out"])) == ws.root / "report.html"
    page = (ws.root / "report.html").read_text()
    assert_valid_and_self_contained(page)
    assert "The workspace is empty: run <code>curate ingest</code>." in page


def test_cli_on_a_folder_that_is_not_a_workspace(tmp_path):
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 1
    assert res.output == (f"Error: {tmp_path}: expected a curate workspace, found no curate.json "
                          "(create one with `curate ingest SOURCE --into WS`)\n")


def test_installed_command_json_summary(skimage_ws, tmp_path):
    exe = Path(sys.executable).parent / "curate"
    out = tmp_path / "r.html"
    run = subprocess.run([str(exe), "report", str(skimage_ws.root), "--out", str(out), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["out"] == str(out) and summary["bytes"] == out.stat().st_size
    assert summary["sections"]["runs"] == "shown" and summary["sections"]["balance"] == "not run"


# ---------------------------------------------------------------------------
# Rendering in a real browser
# ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]
# Added to a copy of the page (its CSP relaxed to allow this one inline script):
# records errors and, after load, whether every image decoded and what was fetched.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(e.message || ('failed to load ' + ((e.target && (e.target.src || e.target.href)) || '?').slice(0, 60)));
}, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({
    images: imgs.length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
    fetched: performance.getEntriesByType('resource').map(function (r) { return r.name; })
      .filter(function (n) { return n.indexOf('data:') !== 0; }),
    errors: window.__errors,
    sections: document.querySelectorAll('section h2').length
  });
  document.body.appendChild(out);
});
</script>"""


def _chromium(url: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(profile)})


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium; "
                                             "scripts/setup.sh installs it)")
def test_report_renders_in_headless_chromium_without_console_errors(staged, tmp_path):
    page = staged[2]
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    run = _chromium((tmp_path / "report.html").as_uri(), tmp_path / "profile-a")
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []  # no script errors, no CSP violations, no failed loads
    assert run.stdout.count("<section id=") == len(SECTIONS)

    from curate.report.html import CSP

    probed = page.replace(CSP, CSP.replace("default-src 'none'", "default-src 'none'; script-src 'unsafe-inline'"))
    probed = probed.replace("</body>", PROBE + "</body>")
    (tmp_path / "probed.html").write_text(probed, encoding="utf-8")
    run = _chromium((tmp_path / "probed.html").as_uri(), tmp_path / "profile-b")
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == [] and probe["fetched"] == [] and probe["broken"] == 0
    assert probe["images"] == page.count("<img ") and probe["sections"] == len(SECTIONS)


def test_faces_then_square_on_real_photos_report_the_kept_generation(corpus, tmp_path):
    from curate.stages.faces import FacesOptions, faces
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.stages.square import SquareOptions, square

    src = tmp_path / "people"
    for person, f in (("obama", "obama1.jpg"), ("biden", "biden.jpg"), ("jeff", "img21.jpg")):
        (src / person).mkdir(parents=True)
        shutil.copy2(corpus / "faces_by_person" / person / f, src / person / f)
    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(src, "people")], workers=1))
    ws.run_stage("faces", faces, FacesOptions(workers=1))
    ws.run_stage("square", square, SquareOptions(size_px=160, workers=1))
    res = ws.run_stage("report", report, ReportOptions(out=tmp_path / "r.html", workers=1))
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    doc = assert_valid_and_self_contained(page)
    faces_html = page[page.index('id="faces"'):page.index('id="leakage"')]
    assert "<b>3 face crops</b> from 3 images, 3 kept (3 as their <code>square</code> rows);" in faces_html
    assert faces_html.count('<div class="thumb kept"') == doc.images["faces"] == 3
    assert faces_html.count("→ square 160×160") == 3 and faces_html.count("\nphoto ") == 3
    assert 'class="thumb dropped"' not in faces_html
    assert "6 rows were replaced by what a later stage made of them" in page
    assert res.summary["sections"]["faces"] == "shown"
