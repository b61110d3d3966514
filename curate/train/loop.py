"""Training and evaluation: ``curate train classify`` and ``curate train compare``.

:func:`train_classifier` trains :class:`~curate.train.model.SmallCNN` on the
``train`` split of an export (or workspace) on the CPU, evaluates every split,
and writes ``metrics.json`` and ``model.pt`` into the output folder.
:func:`compare_exports` trains one model on a raw export and one on a curated
export with the same seed and budget, and scores both on the curated ``test``
split.

Repeatability: model initialisation and dropout draw from torch's global
generator, so training runs inside ``torch.random.fork_rng`` seeded with
``seed``: the same seed gives the same model on the same machine and thread
count, and the caller's global RNG state is left as it was. Shuffling uses its
own ``torch.Generator``; flips use a per-item RNG (see ``ImageClassDataset``).

    >>> metrics = train_classifier("export", TrainConfig(epochs=5), "out")  # doctest: +SKIP
    >>> metrics["accuracy"]["test"]  # doctest: +SKIP
    0.62
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from curate import __version__
from curate.errors import FormatError, OptionError
from curate.train.data import (
    FITS,
    MEAN_RGB,
    SPLIT_ORDER,
    STD_RGB,
    ImageClassDataset,
    Sample,
    SourceData,
    discover,
    file_sha256,
)
from curate.train.model import (
    MIN_IMG_SIZE,
    SMALL_CNN,
    arch_name,
    build_model,
    check_model_name,
    describe,
    model_bytes,
)
from curate.workspace import atomic_write_bytes

METRICS_FORMAT = "curate.train.metrics/1"
COMPARE_FORMAT = "curate.train.compare/1"


@dataclass
class TrainConfig:
    """Everything that decides a training run (recorded in metrics.json)."""

    epochs: int = 10
    img_size: int = 64  # px, square side fed to the network
    batch_size: int = 32
    seed: int = 0
    fit: str = "letterbox"  # letterbox | stretch | crop (see curate.train.data.fit_image)
    augment: bool = True  # random horizontal flip on train images
    lr: float = 2e-3  # AdamW learning rate, cosine-annealed to 0 over the run
    weight_decay: float = 1e-4
    width: int = 16  # channels of the first conv block (16: ~0.1 M parameters)
    threads: int = 0  # torch threads while training; 0: torch's default (set back afterwards)
    decode_threads: int = 0  # 0: min(8, cores)
    model: str = SMALL_CNN  # small-cnn | a torchvision classifier name | timm:NAME (curate.train.model)
    pretrained: bool = False  # start from the library's ImageNet weights (downloaded on first use)
    device: str = "auto"  # auto (a GPU when present) | cpu | cuda | cuda:N | mps

    def check(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("img_size", MIN_IMG_SIZE), ("width", 1), ("threads", 0)):
            value = getattr(self, name)
            if value < low:
                raise OptionError("", field=name.replace("_", "-"), expected=f">= {low}", found=value)
        if self.fit not in FITS:
            raise OptionError("", field="fit", expected=" | ".join(FITS), found=self.fit)
        if self.pretrained and self.model == SMALL_CNN:
            raise OptionError("", field="--pretrained", expected="a torchvision or timm --model",
                              found=f"--model {SMALL_CNN}", hint="there are no published weights for it")
        resolve_device(self.device)
        check_model_name(self.model)

    def arch(self) -> dict[str, Any]:
        """The ``arch`` entry of the saved model (before training: SmallCNN's width and dropout)."""
        name = arch_name(self.model)
        return {"name": name, "width": self.width, "dropout": 0.2} if name == "SmallCNN" else {"name": name}

    def preprocess(self) -> dict[str, Any]:
        return {"img_size": self.img_size, "fit": self.fit, "mean_rgb": list(MEAN_RGB), "std_rgb": list(STD_RGB)}


@dataclass
class Evaluation:
    """Predictions of one model on one set of images.

    ``matrix[i][j]`` counts images of true class ``true_classes[i]`` predicted
    as ``predicted_classes[j]``. The two lists differ when a model is scored on
    another export's images (``curate train compare``).
    """

    true_classes: list[str]
    predicted_classes: list[str]
    matrix: np.ndarray  # int64, len(true_classes) x len(predicted_classes)

    @property
    def images(self) -> int:
        return int(self.matrix.sum())

    @property
    def correct(self) -> int:
        return sum(int(self.matrix[i, self.predicted_classes.index(c)])
                   for i, c in enumerate(self.true_classes) if c in self.predicted_classes)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.images if self.images else None

    @property
    def balanced_accuracy(self) -> float | None:
        """Mean per-class recall over the true classes that have images (sklearn's definition)."""
        recalls = [r["accuracy"] for r in self.per_class().values() if r["images"]]
        return sum(recalls) / len(recalls) if recalls else None

    def per_class(self) -> dict[str, dict[str, Any]]:
        out = {}
        for i, c in enumerate(self.true_classes):
            n = int(self.matrix[i].sum())
            ok = int(self.matrix[i, self.predicted_classes.index(c)]) if c in self.predicted_classes else 0
            out[c] = {"images": n, "correct": ok, "accuracy": ok / n if n else None}
        return out

    def restricted(self, classes: set[str]) -> Evaluation:
        """Only the rows of true classes in ``classes``."""
        rows = [i for i, c in enumerate(self.true_classes) if c in classes]
        return Evaluation([self.true_classes[i] for i in rows], self.predicted_classes, self.matrix[rows])

    def to_json(self) -> dict[str, Any]:
        low, high = wilson_interval(self.correct, self.images)
        return {
            "images": self.images,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "accuracy_95": [low, high],
            "balanced_accuracy": self.balanced_accuracy,
            "per_class": self.per_class(),
            "confusion_matrix": {
                "rows": "true class", "columns": "predicted class",
                "true_classes": self.true_classes, "predicted_classes": self.predicted_classes,
                "matrix": self.matrix.tolist(),
            },
        }


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """95% Wilson score interval of an accuracy of ``correct`` out of ``n``.

    Unlike the normal approximation it stays inside [0, 1] and is honest for
    the small test splits curate often sees.

        >>> [round(x, 3) for x in wilson_interval(4, 5)]
        [0.376, 0.964]
    """
    if n <= 0:
        return None, None
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def resolve_device(device: str) -> torch.device:
    """``auto``: the first CUDA GPU when torch sees one (else Apple's MPS, else the CPU)."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise OptionError("", field="--device", expected="auto, cpu, cuda, cuda:N or mps", found=repr(device)) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("", field="--device", expected="a CUDA GPU torch can see", found="none",
                          hint="use --device auto or cpu")
    return dev


def recalibrate_batchnorm(model: nn.Module, dataset: ImageClassDataset, *, batch_size: int,
                          device: torch.device) -> int:
    """Recompute every BatchNorm's running statistics over ``dataset`` (un-augmented); return the batches used.

    Running statistics are an exponential average (momentum 0.1) of the
    training batches' statistics, starting from mean 0 and variance 1. On a
    small set that is a few dozen noisy updates, some from a tiny last batch,
    while the weights kept moving: in eval mode the network then normalizes
    with statistics it never trained with. That is what made a balanced
    12-class set score 0.94 in train mode and 0.56 as a saved model (issue 14).
    Here each BatchNorm averages the statistics of batches of the final
    network (momentum None: a cumulative average), as in "precise BN".
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or not len(dataset):
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    n = len(dataset)
    size = min(max(batch_size, 64), n)
    # Every batch counts alike in the average: leave out a last batch under half the size (as in training).
    loader = DataLoader(dataset.with_augment(False), batch_size=size, shuffle=False,
                        drop_last=drops_last_batch(n, size), generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.train()
    batches = 0
    with torch.no_grad():
        for x, _ in loader:
            model(x.to(device))
            batches += 1
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return batches


def drops_last_batch(n: int, batch_size: int) -> bool:
    """Drop a shuffled epoch's last batch when it is under half a batch (and others remain).

    A batch of one or two images gives BatchNorm useless statistics (one image
    at a 1x1 feature map is an error in train mode).

        >>> drops_last_batch(65, 32), drops_last_batch(80, 32), drops_last_batch(10, 32)
        (True, False, False)
    """
    rest = n % batch_size
    return n > batch_size and 0 < rest < batch_size / 2


@dataclass
class Fitted:
    model: nn.Module
    classes: list[str]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    arch: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


def evaluate(model: nn.Module, dataset: ImageClassDataset, model_classes: list[str], *,
             batch_size: int = 64) -> Evaluation:
    """Score ``model`` (whose outputs are ``model_classes``) on ``dataset``, in eval mode."""
    device = next(model.parameters()).device
    matrix = np.zeros((len(dataset.classes), len(model_classes)), dtype=np.int64)
    # An own generator: a DataLoader without one draws its base seed from the global RNG.
    loader = DataLoader(dataset.with_augment(False), batch_size=batch_size, shuffle=False,
                        generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for x, y in loader:
            pred = model(x.to(device)).argmax(dim=1).cpu()
            np.add.at(matrix, (y.numpy(), pred.numpy()), 1)
    model.train(was_training)
    return Evaluation(list(dataset.classes), list(model_classes), matrix)


def fit(train_ds: ImageClassDataset, config: TrainConfig, *, val_ds: ImageClassDataset | None = None,
        progress: bool = False) -> Fitted:
    """Train a fresh ``config.model`` on ``train_ds`` for ``config.epochs`` epochs.

    Afterwards the BatchNorm statistics are recomputed over the training images
    (:func:`recalibrate_batchnorm`), so the model scores in eval mode what it
    learnt in train mode.
    """
    from tqdm.auto import tqdm

    classes = list(train_ds.classes)
    device = resolve_device(config.device)
    drop_last = drops_last_batch(len(train_ds), config.batch_size)
    steps_per_epoch = len(train_ds) // config.batch_size if drop_last else -(-len(train_ds) // config.batch_size)
    t0 = time.perf_counter()
    # fork_rng: seed init and dropout without leaving a trace on the caller's RNG.
    with torch.random.fork_rng(devices=[]), _torch_threads(config.threads):
        torch.manual_seed(config.seed)
        arch = config.arch()
        model = build_model(arch, len(classes), pretrained=config.pretrained).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
        loss_fn = nn.CrossEntropyLoss()
        shuffle = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(train_ds, batch_size=config.batch_size, shuffle=True, generator=shuffle,
                            drop_last=drop_last)
        out = Fitted(model, classes, arch=describe(model, arch["name"]), device=str(device))
        bar = tqdm(total=config.epochs * steps_per_epoch, disable=not progress, desc="training", unit="batch")
        for epoch in range(config.epochs):
            train_ds.set_epoch(epoch)
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad(set_to_none=True)
                logits = model(x)
                loss = loss_fn(logits, y)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.detach().argmax(1) == y).sum().cpu())
                seen += len(y)
                out.steps += 1
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{loss_sum / seen:.3f}")
            # train_accuracy: in train mode, while the weights move (dropout on, batch statistics).
            record: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen}
            if val_ds is not None and len(val_ds):
                record["val_accuracy"] = evaluate(model, val_ds, classes).accuracy
            out.epochs.append(record)
        bar.close()
        recalibrate_batchnorm(model, train_ds, batch_size=config.batch_size, device=device)
    model.eval()
    out.seconds = time.perf_counter() - t0
    return out


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch threads inside the block (0: leave as is)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_out(out: str | Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """The output folder, created; refuse one that is not empty unless ``overwrite``, and one that
    could touch an input (an export, a workspace or its sources: :func:`curate.paths.check_output_for`)."""
    from curate.paths import check_output_for

    out = check_output_for(out, inputs)
    if out.exists() and not out.is_dir():
        raise OptionError("", file=out, field="--out", expected="a folder", found="a file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OptionError("", file=out, field="--out", expected="an empty or new folder",
                          found="a folder with files in it", hint="pass --overwrite to write into it anyway")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def _loaded(samples: list[Sample], classes: list[str], config: TrainConfig, *, augment: bool, progress: bool,
            warnings: list[str], on_image: Callable[[Sample, Image.Image], None] | None = None) -> ImageClassDataset:
    ds = ImageClassDataset(samples, classes, img_size=config.img_size, fit=config.fit, augment=augment,
                           seed=config.seed)
    warnings.extend(ds.preload(progress=progress, workers=config.decode_threads, on_image=on_image))
    return ds


def _environment() -> dict[str, Any]:
    return {"torch_version": torch.__version__, "curate_version": __version__, "torch_threads": torch.get_num_threads()}


def train_classifier(source: str | Path | SourceData, config: TrainConfig, out: str | Path, *,
                     progress: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train on ``source``'s train split, score every split, write ``metrics.json`` and ``model.pt``.

    Returns the metrics dict that was written.

        >>> m = train_classifier("export", TrainConfig(epochs=1, img_size=32), "out")  # doctest: +SKIP
        >>> sorted(m["accuracy"])  # doctest: +SKIP
        ['test', 'train', 'val']
    """
    config.check()
    src = source if isinstance(source, SourceData) else discover(source)
    out_dir = prepare_out(out, overwrite, [src.root])
    warnings = list(src.warnings)
    t0 = time.perf_counter()
    sets = {name: _loaded(src.split(name), src.classes, config, augment=False, progress=progress,
                          warnings=warnings)
            for name in SPLIT_ORDER if src.split(name)}
    decode_s = time.perf_counter() - t0
    if not len(sets["train"]):
        raise FormatError(src.root, "train split", expected="decodable training images", found="none")
    warnings += small_split_warnings({name: ds.samples for name, ds in sets.items()}, src.classes)
    train_ds = sets["train"].with_augment(config.augment)
    fitted = fit(train_ds, config, val_ds=sets.get("val"), progress=progress)
    t1 = time.perf_counter()
    with _torch_threads(config.threads):
        results = {name: evaluate(fitted.model, ds, fitted.classes).to_json() for name, ds in sets.items()}
    eval_s = time.perf_counter() - t1
    metrics: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "task": "classify",
        "source": {"path": str(src.root), "kind": src.kind, "images": {n: len(d) for n, d in sets.items()},
                   "ignored": src.ignored},
        "classes": fitted.classes,
        "accuracy": {name: r["accuracy"] for name, r in results.items()},
        "balanced_accuracy": {name: r["balanced_accuracy"] for name, r in results.items()},
        "splits": results,
        "loss_per_epoch": [e["loss"] for e in fitted.epochs],
        "epochs": fitted.epochs,
        "steps": fitted.steps,
        "config": dataclasses.asdict(config),
        "model": fitted.arch,
        "device": fitted.device,
        "seed": config.seed,
        **_environment(),
        "seconds": {"decode": round(decode_s, 3), "train": round(fitted.seconds, 3), "evaluate": round(eval_s, 3)},
        "model_file": "model.pt",
        "warnings": warnings,
    }
    atomic_write_bytes(out_dir / "model.pt", model_bytes(fitted.model, fitted.classes, config.preprocess(), fitted.arch))
    _write_json(out_dir / "metrics.json", metrics)
    return metrics


def format_confusion(split: dict[str, Any], max_classes: int = 20) -> str:
    """A split's per-class accuracy and confusion matrix as text (rows: true class; columns: predicted).

        >>> ev = Evaluation(["cat", "dog"], ["cat", "dog"], np.array([[2, 1], [0, 3]]))
        >>> print(format_confusion(ev.to_json()))
        true \\ predicted  cat  dog  accuracy
        cat                 2    1      0.67
        dog                 0    3      1.00
    """
    cm = split["confusion_matrix"]
    true, pred, matrix = cm["true_classes"], cm["predicted_classes"], cm["matrix"]
    if len(true) > max_classes or len(pred) > max_classes:
        return f"({len(true)} classes: the confusion matrix is in metrics.json)"
    first = max([len("true \\ predicted")] + [len(c) for c in true])
    widths = [max(len(c), 3) for c in pred]
    lines = ["true \\ predicted".ljust(first) + "".join(f"  {c:>{w}}" for c, w in zip(pred, widths, strict=True))
             + "  accuracy"]
    for c, row in zip(true, matrix, strict=True):
        acc = split["per_class"][c]["accuracy"]
        lines.append(c.ljust(first) + "".join(f"  {v:>{w}}" for v, w in zip(row, widths, strict=True))
                     + f"  {'-' if acc is None else f'{acc:.2f}':>8}")
    return "\n".join(lines)


MIN_SPLIT_IMAGES = 20  # below this an accuracy moves by 5 points or more per image


def small_split_warnings(splits: dict[str, list[Sample]], classes: list[str]) -> list[str]:
    """Warnings for splits too small to trust and for classes a split has no images of.

        >>> small_split_warnings({"test": [Sample("a.jpg", "cat", "test")]}, ["cat", "dog"])  # doctest: +NORMALIZE_WHITESPACE
        ['test: 1 images, fewer than 20: one image moves its accuracy by 100.0 points',
         "test: no images of class 'dog'"]
    """
    out = []
    for name, samples in splits.items():
        n = len(samples)
        if 0 < n < MIN_SPLIT_IMAGES:
            out.append(f"{name}: {n} images, fewer than {MIN_SPLIT_IMAGES}: one image moves its accuracy by "
                       f"{100 / n:.1f} points")
        have = {s.label for s in samples}
        missing = [c for c in classes if c not in have]
        if n and missing:
            shown = ", ".join(repr(c) for c in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10
                                                               else "")
            out.append(f"{name}: no images of class{'es' if len(missing) > 1 else ''} {shown}")
    return out


def _phash_recorder(store: dict[str, int]) -> Callable[[Sample, Image.Image], None]:
    """Records each decoded image's pHash by path (indices shift when unreadable files are dropped)."""
    from curate.hashing import compute_hashes, hash_thumbnail

    def record(sample: Sample, img: Image.Image) -> None:
        store[sample.path] = int(str(compute_hashes(hash_thumbnail(img))["phash"]), 16)

    return record


def compare_exports(raw: str | Path, curated: str | Path, config: TrainConfig, out: str | Path, *,
                    progress: bool = False, overwrite: bool = False, leak_max_hamming: int = 4) -> dict[str, Any]:
    """Train on ``raw`` and on ``curated`` alike; score both on the curated test split.

    Raw training images that are copies of a curated test image (same bytes,
    or pHash within ``leak_max_hamming`` bits) are left out, so the raw model
    is not scored on images it trained on. When ``curated`` is a workspace,
    copies of each test image's source file (``origin_path``: the photo a
    face crop was cut from) are left out as well. Writes ``compare.json`` and
    ``raw/model.pt``, ``curated/model.pt``; returns the comparison.

        >>> r = compare_exports("raw", "curated", TrainConfig(epochs=5), "cmp")  # doctest: +SKIP
        >>> r["curated"]["test"]["accuracy"] - r["raw"]["test"]["accuracy"]  # doctest: +SKIP
        0.18
    """
    config.check()
    raw_src, cur_src = discover(raw), discover(curated)
    if not cur_src.split("test"):
        raise FormatError(cur_src.root, "test split", expected="test images in the curated export",
                          found=f"splits {sorted(cur_src.counts())}",
                          hint="split the workspace with a test share before exporting")
    out_dir = prepare_out(out, overwrite, [raw_src.root, cur_src.root])
    warnings = [f"raw: {w}" for w in raw_src.warnings] + [f"curated: {w}" for w in cur_src.warnings]

    test_hashes: dict[str, int] = {}
    test_ds = _loaded(cur_src.split("test"), cur_src.classes, config, augment=False, progress=progress,
                      warnings=warnings, on_image=_phash_recorder(test_hashes))
    test_sha = {file_sha256(s.path) for s in test_ds.samples}
    # A workspace knows each test image's source file (a face crop's photo): leave copies of that out too.
    test_sha |= {file_sha256(s.origin_path) for s in test_ds.samples
                 if s.origin_path and s.origin_path != s.path and Path(s.origin_path).is_file()}
    test_ph = np.array([test_hashes[s.path] for s in test_ds.samples], dtype=np.uint64)

    raw_hashes: dict[str, int] = {}
    raw_all = _loaded(raw_src.split("train"), raw_src.classes, config, augment=config.augment, progress=progress,
                      warnings=warnings, on_image=_phash_recorder(raw_hashes))
    leaked = [i for i, s in enumerate(raw_all.samples)
              if file_sha256(s.path) in test_sha or _min_hamming(raw_hashes[s.path], test_ph) <= leak_max_hamming]
    leaked_set = set(leaked)
    raw_ds = raw_all.subset([i for i in range(len(raw_all)) if i not in leaked_set])
    cur_ds = _loaded(cur_src.split("train"), cur_src.classes, config, augment=config.augment, progress=progress,
                     warnings=warnings)

    report: dict[str, Any] = {
        "format": COMPARE_FORMAT,
        "test": {"path": str(cur_src.root), "split": "test", "images": len(test_ds), "classes": cur_src.classes},
        "classes_only_in_raw": sorted(set(raw_src.classes) - set(cur_src.classes)),
        "classes_only_in_curated": sorted(set(cur_src.classes) - set(raw_src.classes)),
    }
    shared = set(raw_src.classes) & set(cur_src.classes)
    for name, src, ds, dropped in (("raw", raw_src, raw_ds, leaked), ("curated", cur_src, cur_ds, [])):
        if not len(ds):
            raise FormatError(src.root, "train split", expected="decodable training images", found="none")
        fitted = fit(ds, config, progress=progress)
        with _torch_threads(config.threads):
            ev = evaluate(fitted.model, test_ds, fitted.classes)
        (out_dir / name).mkdir(exist_ok=True)
        atomic_write_bytes(out_dir / name / "model.pt", model_bytes(fitted.model, fitted.classes, config.preprocess(), fitted.arch))
        report[name] = {
            "path": str(src.root), "kind": src.kind, "train_images": len(ds), "classes": fitted.classes,
            "left_out_as_copies_of_test_images": [str(Path(raw_all.samples[i].path)) for i in dropped],
            "steps": fitted.steps, "loss_per_epoch": [e["loss"] for e in fitted.epochs],
            "train_seconds": round(fitted.seconds, 3),
            "test": ev.to_json(),
            # Same images for both models: test images whose class both exports have.
            "test_accuracy_on_shared_classes": ev.restricted(shared).accuracy,
            "model_file": f"{name}/model.pt",
        }
    report["accuracy"] = {"raw": report["raw"]["test"]["accuracy"], "curated": report["curated"]["test"]["accuracy"]}
    report["accuracy_95"] = {k: report[k]["test"]["accuracy_95"] for k in ("raw", "curated")}
    per_class = [r["images"] for r in report["curated"]["test"]["per_class"].values()]
    report["test"]["images_per_class"] = {"min": min(per_class, default=0), "max": max(per_class, default=0)}
    report["distinguishable"] = not _overlap(report["accuracy_95"]["raw"], report["accuracy_95"]["curated"])
    if not report["distinguishable"]:
        (rl, rh), (cl, ch) = report["accuracy_95"]["raw"], report["accuracy_95"]["curated"]
        warnings.append(f"the test split is too small to tell raw from curated apart: {len(test_ds)} images "
                        f"({report['test']['images_per_class']['min']} to {report['test']['images_per_class']['max']}"
                        f" per class); 95% intervals raw [{rl:.2f}, {rh:.2f}], curated [{cl:.2f}, {ch:.2f}] overlap")
    warnings += small_split_warnings({"curated test": test_ds.samples}, cur_src.classes)
    if report["classes_only_in_curated"]:
        n = sum(1 for s in test_ds.samples if s.label not in shared)
        warnings.append(f"{n} curated test images are of classes the raw export does not have "
                        f"({', '.join(report['classes_only_in_curated'])}); the raw model counts them as wrong; "
                        "see test_accuracy_on_shared_classes")
    if report["classes_only_in_raw"]:
        warnings.append(f"the raw model can also predict classes the curated export does not have "
                        f"({', '.join(report['classes_only_in_raw'])}); such predictions count as wrong")
    report.update(config=dataclasses.asdict(config), seed=config.seed, budget=f"{config.epochs} epochs each",
                  leak_max_hamming=leak_max_hamming, **_environment(), warnings=warnings)
    _write_json(out_dir / "compare.json", report)
    return report


def _overlap(a: list[float | None], b: list[float | None]) -> bool:
    if None in a or None in b:
        return True
    return not (a[1] < b[0] or b[1] < a[0])  # type: ignore[operator]


def _min_hamming(h: int, others: np.ndarray) -> int:
    if not len(others):
        return 64
    x = np.bitwise_xor(others, np.uint64(h))
    return int(np.unpackbits(x.view(np.uint8)).reshape(len(x), 64).sum(axis=1).min())
