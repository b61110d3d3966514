"""What every writer shares: which bytes to write for an image, how to place
them, the class list, and how numbers are printed.

The export image policy (also in docs/formats.md):

- An image is written **byte for byte** (copied, hard-linked or symlinked, as
  ``--link`` says) when consumers see it exactly as curate does: its content is
  JPEG, PNG or BMP and its EXIF orientation is absent or 1. Its extension is
  corrected when it does not name the content (a WebP called ``.jpg`` is not
  byte-copied at all, a JPEG called ``.jfif`` becomes ``.jpg``).
- Every other image is **re-encoded upright**: decoded with EXIF orientation
  applied (first frame), written without EXIF (so no reader rotates it again),
  as JPEG quality 95 4:4:4 for lossy sources and PNG for lossless ones.
  This covers EXIF-rotated photos (whose boxes live in the displayed frame)
  and formats that torchvision ImageFolder, Keras and Ultralytics do not all
  read (WebP, TIFF, GIF, HEIF, AVIF, ...).

    >>> image_action("JPEG", 6, ".jpg")
    ('encode', '.jpg', 'exif_orientation')
    >>> image_action("JPEG", None, ".JPG")
    ('link', '.JPG', None)
    >>> image_action("WEBP", None, ".jpg")
    ('encode', '.png', 'format')
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from curate.errors import ExportError

LINK_MODES = ("copy", "hardlink", "symlink")

# Content formats every consumer we target reads, with the extensions that name them.
PASSTHROUGH_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (".jpg", ".jpeg"),  # a JPEG with multi-picture data: read as JPEG everywhere
    "PNG": (".png",),
    "BMP": (".bmp",),
}


def image_action(content_format: str | None, exif_orientation: int | None, suffix: str) -> tuple[str, str, str | None]:
    """(action, extension, why) for one exported image: ``link`` keeps the bytes,
    ``encode`` writes an upright re-encoded copy. ``why`` names the cause."""
    from curate.derive import encode_image_format

    fmt = (content_format or "").upper()
    if exif_orientation not in (None, 1):
        return "encode", "." + encode_image_format(fmt), "exif_orientation"
    allowed = PASSTHROUGH_EXTENSIONS.get(fmt)
    if allowed is None:
        return "encode", "." + encode_image_format(fmt), "format"
    if suffix.lower() in allowed:
        return "link", suffix, None
    return "link", allowed[0], None


def place_image(src: str | Path, dest: str | Path, action: str, link: str) -> None:
    """Write one image to ``dest``: keep the bytes (``link`` mode) or re-encode upright."""
    if action != "link" or link != "copy":  # copy_file makes a missing folder itself
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
    if action == "encode":
        from curate.derive import encode_image
        from curate.imageio import load_display

        ext = os.path.splitext(dest)[1].lower().lstrip(".")
        try:
            img = load_display(src, keep_alpha=ext == "png")
        except Exception as e:  # CurateError from load_display: the file changed since ingest
            raise ExportError(f"cannot decode the image for re-encoding: {e}", file=src,
                              hint="re-run `curate ingest` so the manifest matches the files") from e
        Path(dest).write_bytes(encode_image(img, "jpg" if ext in ("jpg", "jpeg") else "png"))
        return
    try:
        if link == "copy":
            copy_file(src, dest)
        elif link == "hardlink":
            os.link(src, dest)
        elif link == "symlink":
            os.symlink(os.path.abspath(src), dest)
        else:
            raise ExportError("", field="--link", expected=f"one of {LINK_MODES}", found=link)
    except FileNotFoundError as e:
        raise ExportError("the source image is missing", file=src,
                          hint="if its folder moved, `curate relocate WS --source NAME=NEW_FOLDER` or "
                               "`curate relocate WS --search FOLDER`; if it is gone, re-run `curate ingest`, "
                               "which marks it missing_file") from e
    except OSError as e:
        if link == "hardlink" and e.errno in (18, 1):  # EXDEV, EPERM: another file system / not allowed
            raise ExportError(f"cannot hard-link into the export ({e.strerror})", file=src,
                              hint="hard links need the export on the same file system; use --link copy") from e
        raise ExportError(f"cannot write {os.path.basename(dest)}: {e.strerror}", file=src) from e


def _create(path: str | Path) -> int:
    """Open ``path`` for writing (created or truncated; its folder made when missing)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o666)


def copy_file(src: str | Path, dest: str | Path) -> None:
    """Copy the bytes of ``src`` into a new, independent file ``dest``.

    Kernel-side (``os.sendfile``) where the platform allows it: the same bytes
    as :func:`shutil.copyfile` without its per-file stat checks and Python file
    objects, which cost more than the copy for small images (measured in
    docs/benchmarks.md, Convert). Never a link: the export must not change
    when a source does.
    """
    fd_in = os.open(src, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        fd_out = _create(dest)
        try:
            offset = 0
            try:
                while sent := os.sendfile(fd_out, fd_in, offset, 1 << 30):
                    offset += sent
            except OSError:
                if offset:  # failed midway: a real I/O error
                    raise
                # No sendfile between these files (macOS, some file systems): plain reads.
                os.lseek(fd_in, 0, os.SEEK_SET)
                with open(fd_in, "rb", closefd=False) as fin, open(fd_out, "wb", closefd=False) as fout:
                    shutil.copyfileobj(fin, fout)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def write_file(path: str | Path, data: bytes) -> None:
    """Write ``data`` as the whole of ``path``, with one open and one write (a
    label file per image: :meth:`pathlib.Path.write_text` costs several times more)."""
    fd = _create(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


# Threads that write an export's files. Creating thousands of small files waits
# on the file system far more than on the CPU (the GIL is released while a
# thread waits), so a few threads overlap those waits: measured in
# docs/benchmarks.md, Convert.
WRITE_THREADS = 4


class FileWriter:
    """Images and small files of one export, written on :data:`WRITE_THREADS` threads.

    Use it as a context manager: leaving the block waits for every write and
    raises the first failure (in the order the writes were asked for); a
    failure, or an exception in the block, cancels the writes not yet started.
    Writes go to the threads in batches of ``batch``, so that handing them over
    costs little next to the writes themselves.

        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> with FileWriter("copy") as w:
        ...     w.text(d / "labels" / "a.txt", "0 0.5 0.5 1 1\\n")
        >>> (d / "labels" / "a.txt").read_text()
        '0 0.5 0.5 1 1\\n'
    """

    def __init__(self, link: str, threads: int = WRITE_THREADS, batch: int = 64) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from curate.engine import resolve_engine

        self.link = link
        # Inside ``curate.engine.engine_scope("ray")`` (``curate export --engine ray``) the images are
        # placed by Ray workers, all at the end of the block; small files stay on the threads.
        self._on_ray: list[tuple[str, str, str, str]] | None = [] if resolve_engine(None) == "ray" else None
        self.batch = batch
        self._prefix = f"curate-write-{id(self):x}"
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=self._prefix)
        self._futures: list[Any] = []
        self._pending: list[tuple[Any, ...]] = []

    def image(self, src: str | Path, dest: str | Path, action: str) -> None:
        """:func:`place_image`, on a writer thread (or a Ray worker)."""
        if self._on_ray is not None:
            self._on_ray.append((str(src), str(dest), action, self.link))
            return
        self._add((place_image, src, dest, action, self.link))

    def text(self, path: str | Path, text: str) -> None:
        """Write ``text`` (UTF-8) as the whole of ``path``, on a writer thread."""
        self._add((write_file, path, text.encode("utf-8")))

    def _add(self, job: tuple[Any, ...]) -> None:
        self._pending.append(job)
        if len(self._pending) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._futures.append(self._pool.submit(_run_jobs, self._pending))
            self._pending = []

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._flush()
                for f in self._futures:
                    f.result()
                if self._on_ray:
                    from curate.engine import stream_map

                    for _ in stream_map(_place_task, self._on_ray, max_chunk=64, on_crash=_place_crashed):
                        pass
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            # A Ctrl-C or SIGTERM that lands inside ``submit`` can cut a thread's start short after the thread
            # runs but before the pool lists it, so shutdown does not wait for it: wait for every thread of this
            # writer, so that no file is written after the caller removes the staging folder.
            import threading

            for t in threading.enumerate():
                if t.name.startswith(self._prefix + "_") and t is not threading.current_thread():
                    t.join()


def _run_jobs(jobs: list[tuple[Any, ...]]) -> None:
    for fn, *args in jobs:
        fn(*args)


def _place_task(job: tuple[str, str, str, str]) -> None:
    place_image(*job)


def _place_crashed(job: tuple[str, str, str, str], crash: Any) -> None:
    """An image whose worker process died on it every time: the export stops (nothing is published)."""
    raise ExportError(f"{crash.message()} while writing {os.path.basename(job[1])}", file=job[0],
                      hint="the image crashes its decoder; drop it (curate review, or re-run `curate ingest`) "
                           "and export again")


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that puts ``label_2`` before ``label_10``.

    >>> sorted(["b10", "b2", "a"], key=natural_key)
    ['a', 'b2', 'b10']
    """
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)) + (text,)


def class_list(used: Iterable[str], declared: list[str] | None = None) -> list[str]:
    """The class list of an export: ``declared`` (in its order) when given, else
    the used labels in natural order. A used label missing from ``declared`` is
    an error, never silently appended.

    >>> class_list(["cat", "dog", "cat"])
    ['cat', 'dog']
    """
    labels = {str(u) for u in used}
    if declared is None:
        return sorted(labels, key=natural_key)
    missing = sorted(labels - set(declared), key=natural_key)
    if missing:
        raise ExportError("", field="--classes", expected=f"every exported label among {declared}",
                          found=f"{len(missing)} missing: {missing[:10]}",
                          hint="add them to --classes, or drop those rows first")
    return list(dict.fromkeys(declared))


def detection_classes(boxes: Any, declared: list[str] | None, fmt: str, images: int) -> list[str]:
    """The class list of a detection export (yolo, coco, voc): refuse one without any box.

    An export without boxes has no classes, and Ultralytics refuses its
    ``nc: 0`` as a 0-class dataset (issue 14). Declared classes (``--classes``)
    are an explicit request for an all-background dataset, so they are written.

    >>> import pandas as pd
    >>> detection_classes(pd.DataFrame({"label": ["dog", "cat"]}), None, "yolo", 2)
    ['cat', 'dog']
    """
    if not len(boxes) and not declared:
        raise ExportError("", field="boxes", expected=f"at least one box in a {fmt} (detection) export",
                          found=f"0 boxes on {images} images",
                          hint="add boxes first (`curate faces WS --boxes`, or ingest a dataset with boxes), "
                               "export classes with --format folder or yolo-cls, or pass --classes to write "
                               "every image as a background image")
    return class_list(boxes["label"] if len(boxes) else [], declared)


def fmt_num(value: float) -> str:
    """Shortest text that reads back as exactly ``value``; ``12`` rather than ``12.0``.

    >>> fmt_num(12.0), fmt_num(0.5), fmt_num(1 / 3)
    ('12', '0.5', '0.3333333333333333')
    """
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {value!r}")
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def fmt_frac(value: float) -> str:
    """A fraction of the image size with 8 decimals, trailing zeros removed
    (error below 5e-9 of the image size).

    >>> fmt_frac(0.5), fmt_frac(1 / 3), fmt_frac(0.0)
    ('0.5', '0.33333333', '0')
    """
    text = f"{float(value):.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def check_folder_name(label: str, what: str = "label") -> str:
    """``label`` if it can be one folder name on every OS; else an ExportError."""
    bad = not label or label in (".", "..") or any(c in label for c in '/\\\0') or label != label.strip()
    if bad:
        raise ExportError("", field=what, expected="a name usable as a folder (no '/', '\\', leading/trailing spaces)",
                          found=repr(label), hint="relabel those rows before a folder export")
    return label


def image_files_by_split(plan: Any) -> dict[str, list[dict[str, Any]]]:
    """Rows of an export plan grouped by split, in plan order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in plan.to_dict("records"):
        out.setdefault(row["split"], []).append(row)
    return out


def boxes_by_sample(boxes: Any) -> dict[str, list[dict[str, Any]]]:
    """Annotation rows grouped by sample_id, in table order."""
    out: dict[str, list[dict[str, Any]]] = {}
    if boxes is None or not len(boxes):
        return out
    # Columns as Python lists, zipped into dicts: the same records as
    # ``to_dict("records")`` at a third of the cost (it boxes every cell).
    cols = [str(c) for c in boxes.columns]
    for values in zip(*(boxes[c].tolist() for c in boxes.columns), strict=True):
        row = dict(zip(cols, values, strict=True))
        out.setdefault(row["sample_id"], []).append(row)
    return out
