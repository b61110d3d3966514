"""curate.train.data: reading exports and workspaces, preprocessing, augmentation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch", reason="curate.train needs torch: pip install 'curate[train]'")

from curate.errors import CurateError  # noqa: E402
from curate.train.data import (  # noqa: E402
    MEAN_RGB,
    PAD_RGB,
    STD_RGB,
    ImageClassDataset,
    Sample,
    discover,
    fit_image,
    read_workspace,
)

from .conftest import CLASSES  # noqa: E402


def test_export_samples_splits_and_classes(tiny_export: Path):
    src = discover(tiny_export)
    assert src.kind == "folder"
    assert src.classes == sorted(CLASSES)
    assert src.counts() == {"train": 8, "val": 4, "test": 4}
    assert src.warnings == []
    # every sample's label is its class folder, its split the top folder
    for s in src.samples:
        parts = Path(s.path).relative_to(tiny_export).parts
        assert (s.split, s.label) == (parts[0], parts[1])


@pytest.mark.parametrize("val_name, test_name", [
    ("valid", "test"),       # Roboflow / Ultralytics spelling
    ("validation", "testing"),  # long forms
])
def test_split_folder_aliases_are_canonical(corpus: Path, tmp_path: Path, val_name: str, test_name: str):
    from .conftest import make_export

    root = make_export(corpus, tmp_path / "e", classes=("jack",), split_names=("train", val_name, test_name))
    assert discover(root).counts() == {"train": 2, "val": 1, "test": 1}


def test_class_folders_without_splits_train_on_everything_with_a_warning(corpus: Path, tmp_path: Path):
    root = tmp_path / "flat"
    for cls in ("jack", "jeff"):
        shutil.copytree(corpus / "faces_by_person" / cls, root / cls)
    src = discover(root)
    assert src.counts() == {"train": 7}
    assert src.warnings == [
        "no split folders (train/, val/, test/): all 7 images are used for training, "
        "so accuracy is measured on training images only"
    ]


def test_files_outside_class_folders_are_counted_not_used(export_copy: Path):
    (export_copy / "README.txt").write_text("exported by curate")
    (export_copy / "train" / "labels.cache").write_bytes(b"\x00")
    (export_copy / "train" / "jack" / ".hidden.jpg").write_bytes(b"")
    src = discover(export_copy)
    assert src.counts() == {"train": 8, "val": 4, "test": 4}
    assert src.ignored == {"not in a class folder": 2, "hidden": 1}


def test_class_missing_from_train_is_warned(export_copy: Path):
    shutil.rmtree(export_copy / "train" / "jack")
    src = discover(export_copy)
    assert "jack" in src.classes
    assert src.warnings == ["classes with no training image (the model cannot learn them): jack"]


@pytest.mark.parametrize("make, message", [
    # nothing at all
    (lambda root: None, "{root}: expected labelled images (split/class/image or class/image), found none "
                        "(point at the folder `curate export --format folder` wrote)"),
    # a YOLO detection export belongs to `curate train yolo`
    (lambda root: ((root / "images").mkdir(), (root / "data.yaml").write_text("names: [a]\n")),
     "{root}: expected a folder or yolo-cls export (split/class/image), found a YOLO detection export "
     "(data.yaml, images/) (train a detector on it with `curate train yolo`)"),
])
def test_unusable_folders_are_clear_errors(tmp_path: Path, make, message: str):
    root = tmp_path / "export"
    root.mkdir()
    make(root)
    with pytest.raises(CurateError) as e:
        discover(root)
    assert str(e.value) == message.format(root=root)


def test_workspace_split_reads_kept_labelled_rows(tiny_export: Path, tmp_path: Path):
    from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    from curate.workspace import Workspace

    ws = Workspace.create(tmp_path / "ws")
    ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(tiny_export, "faces")], workers=1))
    src = discover(ws.root)
    assert src.kind == "workspace"
    assert src.counts() == {"train": 8, "val": 4, "test": 4}
    assert src.classes == sorted(CLASSES)
    # a row dropped by a decision is not trained on
    m = ws.read_manifest()
    victim = m.index[m["split"] == "train"][0]
    m.loc[victim, ["status", "reason"]] = ["dropped", "rejected_in_review"]
    ws.write_manifest(m)
    src = read_workspace(ws.root)
    assert src.counts() == {"train": 7, "val": 4, "test": 4}
    assert m.loc[victim, "path"] not in {s.path for s in src.samples}


@pytest.mark.parametrize("fit, pad_rows", [
    ("letterbox", True),   # aspect kept: the short side is padded with the mean colour
    ("stretch", False),    # aspect changed: no padding
    ("crop", False),       # centre cut: no padding
])
def test_fit_image_on_a_landscape_photo(corpus: Path, fit: str, pad_rows: bool):
    img = Image.open(corpus / "faces_by_person" / "jack" / "img16.jpg").convert("RGB")  # 740x418
    out = np.asarray(fit_image(img, 64, fit))
    assert out.shape == (64, 64, 3)
    top_is_pad = bool((out[:8] == np.array(PAD_RGB, dtype=np.uint8)).all())
    assert top_is_pad is pad_rows


def test_items_are_normalized_tensors_with_class_index(tiny_export: Path):
    src = discover(tiny_export)
    ds = ImageClassDataset(src.split("test"), src.classes, img_size=32, fit="crop")
    assert ds.preload() == []
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert src.classes[y] == ds.samples[0].label
    # undoing the normalization gives back the cached uint8 pixels
    pixels = (x * torch.tensor(STD_RGB).view(3, 1, 1) + torch.tensor(MEAN_RGB).view(3, 1, 1)) * 255
    cached = torch.from_numpy(ds._cache[0].copy()).permute(2, 0, 1).float()
    assert torch.allclose(pixels, cached, atol=1e-3)


def test_exif_orientation_is_applied(corpus: Path):
    # The same portrait stored rotated three ways, upright only after EXIF.
    names = ["pillow_hopper_orientation_3.jpg", "pillow_hopper_orientation_6.jpg", "pillow_hopper_orientation_8.jpg"]
    samples = [Sample(str(corpus / "faces_misc" / n), "hopper", "test") for n in names]
    ds = ImageClassDataset(samples, ["hopper"], img_size=32, fit="stretch")
    xs = [ds[i][0] for i in range(3)]
    assert all((xs[0] - x).abs().mean() < 0.1 for x in xs[1:])
    # control: the stored pixels (no EXIF) of 3 and 6 are far apart
    raw = [np.asarray(Image.open(s.path).convert("RGB").resize((32, 32)), dtype=np.float32) for s in samples[:2]]
    assert np.abs(raw[0] - raw[1]).mean() > 20


def test_flips_are_repeatable_per_seed_epoch_and_item(tiny_export: Path):
    src = discover(tiny_export)
    ds = ImageClassDataset(src.split("train"), src.classes, img_size=32, augment=True, seed=3)
    pattern = [ds.flips(i) for i in range(len(ds))]
    assert pattern == [ImageClassDataset(ds.samples, src.classes, augment=True, seed=3).flips(i)
                       for i in range(len(ds))]
    epochs = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        epochs.add(tuple(ds.flips(i) for i in range(len(ds))))
    assert len(epochs) > 1  # a different coin each epoch
    assert not any(ds.with_augment(False).flips(i) for i in range(len(ds)))
    # a flipped item is the mirror image of the unflipped one
    i = next(i for i in range(len(ds)) if ds.flips(i))
    assert torch.equal(ds[i][0], ds.with_augment(False)[i][0].flip(-1))


def test_unreadable_image_is_skipped_with_a_warning(export_copy: Path):
    bad = export_copy / "train" / "jack" / "cut.jpg"
    good = next((export_copy / "train" / "jack").iterdir())
    bad.write_bytes(good.read_bytes()[:300])  # a real JPEG cut short
    src = discover(export_copy)
    ds = ImageClassDataset(src.split("train"), src.classes, img_size=32)
    warnings = ds.preload()
    assert len(warnings) == 1 and warnings[0].startswith(f"skipped (cannot decode): {bad}: cannot decode image")
    assert len(ds) == 8 and str(bad) not in {s.path for s in ds.samples}
    assert len(ds.targets) == len(ds.samples)


def test_label_outside_the_class_list_is_an_error(tiny_export: Path):
    src = discover(tiny_export)
    with pytest.raises(CurateError) as e:
        ImageClassDataset(src.split("test"), ["jack"])
    assert str(e.value) == ("classes: expected every sample's label in the class list, "
                            "found labels not in it: angelina, jennifer, scarlett")
