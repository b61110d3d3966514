"""What to train on: samples from an export or a workspace, and a PyTorch ``Dataset``.

Three sources give the same :class:`SourceData` (samples with path, label and
split, plus one class list shared by every split):

- a folder export, ``split/class/image`` (``curate export --format folder``);
- a yolo-cls export, which has the same ``split/class/image`` layout;
- a workspace folder (it holds ``curate.json``): the kept, labelled rows of
  ``manifest.parquet``, each in its own ``split``.

Split folder aliases (``valid``, ``validation``, ...) are read as their
canonical names. A folder with class folders but no split folders, or a
workspace with no split set, is read as one ``train`` split, with a warning.

:class:`ImageClassDataset` decodes each image once with
:func:`curate.imageio.load_display` (first frame, EXIF orientation applied,
RGB), fits it into an ``img_size`` square, keeps the small uint8 result in
memory, and returns a normalized ``float32`` tensor ``(3, img_size, img_size)``
and the class index.

    >>> src = discover("export")  # doctest: +SKIP
    >>> ds = ImageClassDataset(src.split("train"), src.classes, img_size=64)  # doctest: +SKIP
    >>> x, y = ds[0]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from curate.errors import CurateError, FormatError, OptionError
from curate.formats.base import ReadOptions
from curate.formats.folder import read_folder
from curate.imageio import load_display

SPLIT_ORDER = ("train", "val", "test")
FITS = ("letterbox", "stretch", "crop")
# ImageNet channel statistics: the usual constants, so a model trained here
# sees inputs on the same scale as most published vision code.
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
# Letterbox padding is the mean colour, so it normalizes to ~0 (no signal).
PAD_RGB = tuple(round(m * 255) for m in MEAN_RGB)
_MEAN = torch.tensor(MEAN_RGB).view(3, 1, 1)
_STD = torch.tensor(STD_RGB).view(3, 1, 1)


@dataclass(frozen=True)
class Sample:
    """One labelled image of one split."""

    path: str
    label: str
    split: str
    sample_id: str | None = None  # manifest id, when read from a workspace
    origin_path: str | None = None  # the source file a workspace row descends from


@dataclass
class SourceData:
    """Everything a training run reads from one export or workspace."""

    root: Path
    kind: str  # "folder" or "workspace"
    samples: list[Sample]
    classes: list[str]  # sorted union over all splits: one index per class everywhere
    warnings: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # why -> how many files were not used

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict[str, int]:
        return {name: n for name in SPLIT_ORDER if (n := len(self.split(name)))}


def discover(root: str | Path) -> SourceData:
    """Read an export folder or a workspace into :class:`SourceData`.

    A folder holding ``curate.json`` is a workspace; anything else is read as
    a folder / yolo-cls export.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise OptionError("", file=root, expected="an export folder or a workspace", found="no such folder")
    if (root / "curate.json").exists():
        return read_workspace(root)
    return read_export(root)


def read_export(root: Path) -> SourceData:
    """Samples of a folder or yolo-cls export (``split/class/image``)."""
    if (root / "data.yaml").exists() and (root / "images").is_dir():
        raise FormatError(root, None, expected="a folder or yolo-cls export (split/class/image)",
                          found="a YOLO detection export (data.yaml, images/)",
                          hint="train a detector on it with `curate train yolo`")
    # Exports may link to the source files (--link symlink), which lie outside.
    result = read_folder(root, ReadOptions(follow_links=True))
    ignored: dict[str, int] = {}
    rows: list[Sample] = []
    for e in result.entries:
        if e.reason is not None:
            why = e.reason
        elif e.label is None:
            why = "not in a class folder"
        else:
            rows.append(Sample(e.path, e.label, e.split or "", None))
            continue
        ignored[why] = ignored.get(why, 0) + 1
    return _finish(root, "folder", rows, ignored, "split folders (train/, val/, test/)")


def read_workspace(root: Path, splits: Sequence[str] = SPLIT_ORDER) -> SourceData:
    """Samples of the kept, labelled rows of a workspace, by their ``split``.

    Images are the rows' own files: the source file for ingested rows, the
    ``objects/`` file for derived ones (face crops, squares).
    """
    from curate.workspace import Workspace

    manifest = Workspace.open(root).read_manifest()
    kept = manifest[manifest["status"] == "kept"]
    ignored = {}
    if n := int(kept["label"].isna().sum()):
        ignored["kept rows without a label"] = n
    kept = kept[kept["label"].notna()]
    rows = [
        Sample(str(p), str(lab), "" if pd.isna(sp) else str(sp), str(sid), None if pd.isna(o) else str(o))
        for p, lab, sp, sid, o in zip(kept["path"], kept["label"], kept["split"], kept["sample_id"],
                                      kept["origin_path"], strict=True)
    ]
    rows = [r for r in rows if r.split == "" or r.split in splits]
    return _finish(root, "workspace", rows, ignored, "a split on kept rows (run `curate split WS`)")


def _finish(root: Path, kind: str, rows: list[Sample], ignored: dict[str, int], split_hint: str) -> SourceData:
    if not rows:
        raise FormatError(root, None, expected="labelled images (split/class/image or class/image)",
                          found="none", hint="point at the folder `curate export --format folder` wrote")
    warnings = []
    if all(r.split == "" for r in rows):
        rows = [Sample(r.path, r.label, "train", r.sample_id, r.origin_path) for r in rows]
        warnings.append(f"no {split_hint}: all {len(rows)} images are used for training, "
                        "so accuracy is measured on training images only")
    elif n := sum(r.split == "" for r in rows):
        ignored["not in a split"] = ignored.get("not in a split", 0) + n
        rows = [r for r in rows if r.split != ""]
    classes = sorted({r.label for r in rows})
    train_classes = {r.label for r in rows if r.split == "train"}
    if not train_classes:
        raise FormatError(root, "train split", expected="training images", found="none",
                          hint=f"found only {sorted({r.split for r in rows})}")
    if missing := [c for c in classes if c not in train_classes]:
        warnings.append(f"classes with no training image (the model cannot learn them): {', '.join(missing)}")
    return SourceData(root, kind, rows, classes, warnings, ignored)


def fit_image(img: Image.Image, size_px: int, fit: str = "letterbox") -> Image.Image:
    """Make a ``size_px`` square from a displayed RGB image.

    - ``letterbox``: scale the long side to ``size_px`` and pad the short side
      with the mean colour (nothing cut, nothing distorted);
    - ``stretch``: resize to the square, changing the aspect ratio;
    - ``crop``: scale the short side to ``size_px`` and cut the centre.

        >>> fit_image(Image.new("RGB", (200, 100)), 32).size
        (32, 32)
    """
    method = Image.Resampling.BILINEAR
    if fit == "letterbox":
        return ImageOps.pad(img, (size_px, size_px), method=method, color=PAD_RGB)
    if fit == "stretch":
        return img.resize((size_px, size_px), method, reducing_gap=2.0)
    if fit == "crop":
        return ImageOps.fit(img, (size_px, size_px), method=method)
    raise OptionError("", field="fit", expected=" | ".join(FITS), found=fit)


def to_tensor(arr_hwc: np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB -> normalized float32 CHW."""
    x = torch.from_numpy(np.ascontiguousarray(arr_hwc)).permute(2, 0, 1).float().div_(255.0)
    return (x - _MEAN) / _STD


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ImageClassDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images of one split as ``(tensor (3, S, S), class index)``.

    ``classes`` fixes the index of every label (use :attr:`SourceData.classes`
    so that all splits agree). With ``augment=True`` an image is flipped left to
    right with probability 1/2; the coin is a local RNG seeded by
    ``(seed, epoch, index)``, so a run is repeatable and does not depend on the
    order or the process in which items are loaded. Call :meth:`set_epoch`
    before each epoch.

        >>> ds = ImageClassDataset(samples, ["a", "b"], img_size=32)  # doctest: +SKIP
        >>> ds.preload()  # decode once; returns warnings for unreadable files  # doctest: +SKIP
    """

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], *, img_size: int = 64,
                 fit: str = "letterbox", augment: bool = False, seed: int = 0) -> None:
        if fit not in FITS:
            raise OptionError("", field="fit", expected=" | ".join(FITS), found=fit)
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({s.label for s in samples if s.label not in index})
        if unknown:
            raise OptionError("", field="classes", expected="every sample's label in the class list",
                              found=f"labels not in it: {', '.join(unknown)}")
        self.samples = list(samples)
        self.classes = list(classes)
        self.targets = [index[s.label] for s in self.samples]
        self.img_size = img_size
        self.fit = fit
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._cache: list[np.ndarray | None] = [None] * len(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def with_augment(self, augment: bool) -> ImageClassDataset:
        """The same images (sharing the decoded cache) with augmentation on or off."""
        other = copy.copy(self)
        other.augment = augment
        return other

    def _decode(self, i: int) -> np.ndarray:
        img = load_display(self.samples[i].path)
        return np.array(fit_image(img, self.img_size, self.fit), dtype=np.uint8)

    def preload(self, *, progress: bool = False, workers: int = 0,
                on_image: Callable[[Sample, Image.Image], None] | None = None) -> list[str]:
        """Decode every image once (threads: Pillow releases the GIL while decoding).

        Files that cannot be decoded are removed from the dataset; one warning
        per file is returned. ``on_image(sample, displayed_image)`` is called for
        each decoded image (before it is shrunk), e.g. to hash it.
        """
        from tqdm.auto import tqdm

        def work(i: int) -> tuple[int, np.ndarray | None, str | None]:
            try:
                img = load_display(self.samples[i].path)
            except CurateError as e:
                return i, None, str(e)
            if on_image is not None:
                on_image(self.samples[i], img)
            return i, np.array(fit_image(img, self.img_size, self.fit), dtype=np.uint8), None

        todo = [i for i, a in enumerate(self._cache) if a is None]
        warnings: list[str] = []
        bad: set[int] = set()
        n_threads = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            for i, arr, err in tqdm(pool.map(work, todo), total=len(todo), disable=not progress,
                                    desc="decoding", unit="img", leave=False):
                if err is not None:
                    bad.add(i)
                    warnings.append(f"skipped (cannot decode): {err}")
                self._cache[i] = arr
        if bad:
            keep = [i for i in range(len(self.samples)) if i not in bad]
            self.samples = [self.samples[i] for i in keep]
            self.targets = [self.targets[i] for i in keep]
            self._cache = [self._cache[i] for i in keep]
        return warnings

    def subset(self, indices: Sequence[int]) -> ImageClassDataset:
        """The items at ``indices`` (sharing decoded images)."""
        other = copy.copy(self)
        other.samples = [self.samples[i] for i in indices]
        other.targets = [self.targets[i] for i in indices]
        other._cache = [self._cache[i] for i in indices]
        return other

    def flips(self, i: int) -> bool:
        """Whether item ``i`` is flipped in the current epoch (always False without augment)."""
        if not self.augment:
            return False
        return bool(np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        arr = self._cache[i]
        if arr is None:
            arr = self._cache[i] = self._decode(i)
        if self.flips(i):
            arr = arr[:, ::-1]
        return to_tensor(arr), self.targets[i]
