"""curate.train.loop: training, evaluation, metrics.json, compare."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="curate.train needs torch: pip install 'curate[train]'")

from curate.errors import CurateError  # noqa: E402
from curate.train.loop import Evaluation, TrainConfig, compare_exports, train_classifier  # noqa: E402
from curate.train.model import load_model  # noqa: E402

from .conftest import CLASSES  # noqa: E402

# One epoch, tiny inputs, one torch thread (pytest -n 2 runs two of these at once).
QUICK = dict(epochs=1, img_size=32, batch_size=8, threads=1, width=8)


def test_classify_writes_metrics_and_model(tiny_export: Path, tmp_path: Path):
    out = tmp_path / "out"
    metrics = train_classifier(tiny_export, TrainConfig(**QUICK), out)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert set(on_disk["accuracy"]) == {"train", "val", "test"}
    for split, acc in on_disk["accuracy"].items():
        assert isinstance(acc, float) and 0.0 <= acc <= 1.0, split
        cm = on_disk["splits"][split]["confusion_matrix"]
        assert cm["true_classes"] == cm["predicted_classes"] == sorted(CLASSES)
        matrix = np.array(cm["matrix"])
        assert matrix.shape == (4, 4) and matrix.sum() == on_disk["source"]["images"][split]
        assert acc == pytest.approx(np.trace(matrix) / matrix.sum())
    assert on_disk["source"]["images"] == {"train": 8, "val": 4, "test": 4}
    assert len(on_disk["loss_per_epoch"]) == 1 and on_disk["loss_per_epoch"][0] > 0
    assert on_disk["steps"] == 1  # 8 training images, batch of 8
    assert on_disk["seed"] == 0 and on_disk["torch_version"] == torch.__version__
    assert on_disk["config"]["img_size"] == 32
    model, classes, prep = load_model(out / "model.pt")
    assert classes == sorted(CLASSES) and prep["img_size"] == 32 and prep["fit"] == "letterbox"


def test_same_seed_same_model_and_the_global_rng_is_untouched(tiny_export: Path, tmp_path: Path):
    cfg = TrainConfig(**{**QUICK, "epochs": 2})
    state = torch.random.get_rng_state()
    a = train_classifier(tiny_export, cfg, tmp_path / "a")
    assert torch.equal(torch.random.get_rng_state(), state)
    b = train_classifier(tiny_export, cfg, tmp_path / "b")
    c = train_classifier(tiny_export, TrainConfig(**{**QUICK, "epochs": 2, "seed": 1}), tmp_path / "c")
    assert a["loss_per_epoch"] == b["loss_per_epoch"]
    assert a["splits"] == b["splits"]
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
    assert c["loss_per_epoch"] != a["loss_per_epoch"]


def test_a_non_empty_out_folder_is_refused(tiny_export: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CurateError) as e:
        train_classifier(tiny_export, TrainConfig(**QUICK), out)
    assert str(e.value) == (f"{out}: --out: expected an empty or new folder, found a folder with files in it "
                            "(pass --overwrite to write into it anyway)")
    train_classifier(tiny_export, TrainConfig(**QUICK), out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "metrics.json").exists()


@pytest.mark.parametrize("field, value, message", [
    ("img_size", 16, "img-size: expected >= 32, found 16"),   # four poolings need 32 px
    ("epochs", 0, "epochs: expected >= 1, found 0"),
    ("fit", "squash", "fit: expected letterbox | stretch | crop, found squash"),
])
def test_bad_config_is_refused_before_any_work(tiny_export: Path, tmp_path: Path, field, value, message):
    with pytest.raises(CurateError) as e:
        train_classifier(tiny_export, TrainConfig(**{**QUICK, field: value}), tmp_path / "out")
    assert str(e.value) == message
    assert not (tmp_path / "out").exists()


def test_evaluation_with_different_class_lists():
    # true classes of a curated test split vs the classes a raw model knows
    ev = Evaluation(["a", "b", "c"], ["a", "b", "x"], np.array([[2, 1, 0], [0, 1, 1], [1, 0, 0]]))
    assert (ev.images, ev.correct, ev.accuracy) == (6, 3, 0.5)
    assert ev.restricted({"a", "b"}).accuracy == 3 / 5
    per_class = ev.to_json()["per_class"]
    assert per_class["c"] == {"images": 1, "correct": 0, "accuracy": 0.0}  # unknown to the model: wrong
    assert per_class["a"]["accuracy"] == 2 / 3
    assert Evaluation(["a"], ["a"], np.zeros((1, 1), dtype=np.int64)).accuracy is None


def test_compare_scores_both_on_the_curated_test_split(corpus: Path, tiny_export: Path, tmp_path: Path):
    faces = corpus / "faces_by_person"
    # raw: whole class folders, no splits (so it holds the curated test photos too), plus obama
    raw = tmp_path / "raw"
    for cls in (*CLASSES, "obama"):
        shutil.copytree(faces / cls, raw / cls)
    # curated: the tiny export plus elon, whom the raw collection lacks
    curated = Path(shutil.copytree(tiny_export, tmp_path / "curated"))
    elon = sorted((faces / "elon").iterdir())
    for split, f in (("train", elon[0]), ("train", elon[1]), ("test", elon[2])):
        (curated / split / "elon").mkdir(exist_ok=True)
        shutil.copy2(f, curated / split / "elon" / f.name)

    # a resized re-encode of a test photo (a near copy, not the same bytes), after an unreadable file
    from PIL import Image

    test_jack = next((curated / "test" / "jack").iterdir())
    img = Image.open(test_jack)
    img.resize((img.width * 9 // 10, img.height * 9 // 10)).save(raw / "jack" / "near_copy.jpg", quality=80)
    (raw / "jack" / "0_cut.jpg").write_bytes(test_jack.read_bytes()[:300])

    r = compare_exports(raw, curated, TrainConfig(**QUICK), tmp_path / "cmp")
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text()) == json.loads(json.dumps(r))
    assert any(w.startswith(f"skipped (cannot decode): {raw / 'jack' / '0_cut.jpg'}") for w in r["warnings"])
    assert r["classes_only_in_raw"] == ["obama"] and r["classes_only_in_curated"] == ["elon"]
    assert r["test"]["images"] == 5
    for name in ("raw", "curated"):
        acc = r["accuracy"][name]
        assert isinstance(acc, float) and 0.0 <= acc <= 1.0
        assert r[name]["test"]["images"] == 5
        assert r[name]["test"]["confusion_matrix"]["true_classes"] == sorted((*CLASSES, "elon"))
        assert load_model(tmp_path / "cmp" / name / "model.pt")[1] == r[name]["classes"]
    assert r["raw"]["test"]["confusion_matrix"]["predicted_classes"] == sorted((*CLASSES, "obama"))
    assert r["raw"]["test"]["per_class"]["elon"]["correct"] == 0  # the raw model cannot know elon
    # the four curated test photos are also in raw, and one near copy: left out of raw training
    left_out = {Path(p).name for p in r["raw"]["left_out_as_copies_of_test_images"]}
    assert left_out == {p.name for p in (curated / "test").glob("*/*") if p.parent.name != "elon"} | {"near_copy.jpg"}
    # every raw file, less the unreadable one and the five copies
    assert r["raw"]["train_images"] == sum(len(list((raw / c).iterdir())) for c in (*CLASSES, "obama")) - 6
    assert any("1 curated test images are of classes the raw export does not have (elon)" in w
               for w in r["warnings"])


def test_compare_needs_a_curated_test_split(tiny_export: Path, tmp_path: Path):
    curated = Path(shutil.copytree(tiny_export, tmp_path / "curated"))
    shutil.rmtree(curated / "test")
    with pytest.raises(CurateError) as e:
        compare_exports(tiny_export, curated, TrainConfig(**QUICK), tmp_path / "cmp")
    assert str(e.value) == (f"{curated}: test split: expected test images in the curated export, "
                            "found splits ['train', 'val'] (split the workspace with a test share before exporting)")


def test_compare_with_a_curated_workspace_leaves_out_the_photos_of_test_crops(tiny_export: Path, tmp_path: Path):
    from PIL import Image

    from curate.derive import store_derived, upsert_rows
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(tiny_export, "faces")], workers=1))
    m = ws.read_manifest()
    crops = []
    for i in m.index[m["split"] == "test"]:  # a centre crop stands in for a face crop: not a copy
        img = Image.open(m.at[i, "path"]).convert("RGB")
        w, h = img.size
        box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
        crops.append(store_derived(ws, m.loc[i], img.crop(box), {"op": "crop", "xyxy": box}, layout="crop"))
        m.loc[i, ["status", "reason"]] = ["dropped", "superseded"]
    ws.write_manifest(upsert_rows(m, crops))
    # raw: the class folders, holding the 4 photos the test crops were cut from
    raw = tmp_path / "raw"
    for p in tiny_export.glob("*/*/*"):
        (raw / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, raw / p.parent.name / p.name)

    r = compare_exports(raw, ws.root, TrainConfig(**QUICK), tmp_path / "cmp")
    assert r["test"]["images"] == 4
    left_out = {Path(p).name for p in r["raw"]["left_out_as_copies_of_test_images"]}
    assert left_out == {p.name for p in tiny_export.glob("test/*/*")}
    assert r["raw"]["train_images"] == 12
