"""Reading images: recognise by content, validate, decode once, and probe.

Every stage that needs pixels goes through :func:`load_display`, which applies
EXIF orientation and takes the first frame, so that widths, heights, boxes,
hashes and face detections all live in the same *displayed* pixel frame.

:func:`probe_file` is the per-file work of ingest. It is a plain function of a
path and options (no workspace, no globals), so it runs in a process pool now
and could run on a distributed engine later.

    >>> from curate.demo import bundled_photos_dir
    >>> p = bundled_photos_dir() / "astronaut.png"
    >>> r = probe_file(str(p), ProbeOptions())
    >>> (r["format"], r["width"], r["height"], r["reason"])
    ('PNG', 512, 512, None)
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from curate.copydetect import describe
from curate.errors import CurateError
from curate.hashing import HASH_COLUMNS, HASH_VERSION, THUMB_PX, compute_hashes, hash_thumbnail

_REGISTERED = False


def register_openers() -> None:
    """Teach Pillow HEIF/HEIC (pillow-heif). AVIF, WebP, TIFF, BMP, GIF are built in."""
    global _REGISTERED
    if _REGISTERED:
        return
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:  # pragma: no cover - pillow-heif is a core dependency
        pass
    # We check the pixel limit ourselves (too_large) so the limit is an option.
    Image.MAX_IMAGE_PIXELS = None
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    _REGISTERED = True


# Extensions that mean "this was meant to be an image". Used only to tell a
# corrupt image (unreadable) from some other file (not_an_image): recognition
# itself is by content.
IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .bmp .dib .tif .tiff .webp .heic .heif .avif .ppm .pgm .pbm .pnm"
    " .ico .tga .jp2 .j2k .jxl .mpo".split()
)
SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", ".directory"})
SYSTEM_DIRS = frozenset({"__macosx", "$recycle.bin", "system volume information", ".trashes", ".spotlight-v100"})


@dataclass(frozen=True, kw_only=True)
class ProbeOptions:
    """Per-file validation thresholds (see ``curate ingest --help``)."""

    min_side_px: int = 64
    max_pixels: int = 178_956_970  # Pillow's own bomb limit (2 x MAX_IMAGE_PIXELS)
    max_aspect: float = 10.0
    # Files above this many bytes are dropped as too_large without being read (a 6 GB file named .jpg).
    max_file_bytes: int = 2 << 30
    # False leaves the perceptual-hash columns empty (``curate convert``, which
    # never dedupes): every byte is still decoded, at the smallest scale the
    # codec offers, so truncation and the displayed size are still known.
    perceptual_hashes: bool = True


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    if b"\x00" in head:
        return False
    stripped = head.lstrip()
    if stripped[:1] in (b"<", b"{", b"[") or stripped[:5].lower() in (b"<!doc", b"<html"):
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        # A cut in the middle of a multi-byte char at the end is still text.
        try:
            head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def exif_orientation(img: Image.Image) -> int | None:
    """The EXIF orientation tag (1-8), or None when absent, invalid or unreadable."""
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # malformed EXIF is common in the wild; it is not fatal
        return None
    try:
        value = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value in range(1, 9) else None


def displayed_size(stored_wh: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    """(width, height) as displayed: orientations 5-8 swap the axes."""
    w, h = stored_wh
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def apply_orientation(img: Image.Image, orientation: int | None) -> Image.Image:
    """Rotate/flip pixels as the EXIF tag says (Pillow's own transpose table)."""
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation or 1)
    return img.transpose(method) if method is not None else img


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Alpha is composited on ``background``;
    16-bit and float images are scaled to 0..255 rather than clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode == "I" and arr.max() <= 255:
            hi = 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode in ("PA", "La"):
        img = img.convert("RGBA" if mode == "PA" else "LA")
    if img.mode in ("RGBA", "LA", "RGBa"):
        rgba = img.convert("RGBA")
        base = Image.new("RGB", rgba.size, background)
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return img.convert("RGB")


def load_display(path: str | Path, *, keep_alpha: bool = False, draft_px: int | None = None) -> Image.Image:
    """Decode ``path`` fully: first frame, EXIF orientation applied, RGB (or RGBA).

    ``draft_px`` lets the codec decode at a reduced scale (JPEG DCT scaling)
    as long as both sides stay at least that large: every byte is still
    decoded, at a fraction of the cost. Raises :class:`CurateError` naming the
    file when it cannot be decoded.
    """
    register_openers()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.seek(0)
                orientation = exif_orientation(im)
                if draft_px is not None:
                    im.draft("RGB", (draft_px, draft_px))
                im.load()
                if keep_alpha and (im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info):
                    out = im.convert("RGBA")
                else:
                    out = to_rgb(im)
        return apply_orientation(out, orientation)
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise CurateError(f"cannot decode image: {e}", file=path) from e


def _classify_decode_error(e: BaseException) -> str:
    text = str(e).lower()
    if "truncat" in text or "premature end" in text or "not enough data" in text or "incomplete" in text:
        return "truncated"
    return "unreadable"


def probe_bytes(data: bytes | None, name: str, opts: ProbeOptions) -> dict[str, Any]:
    """Validate and describe one file's bytes (``None``: read them from the file ``name``). Never raises for bad input.

    Returns the manifest columns ingest fills from a file: format, mode,
    n_frames, exif_orientation, width, height, reason, detail and the hashes
    (left None when ``opts.perceptual_hashes`` is False).
    """
    register_openers()
    out: dict[str, Any] = {
        "format": None, "mode": None, "n_frames": None, "exif_orientation": None,
        "width": None, "height": None, "reason": None, "detail": None,
        **dict.fromkeys(HASH_COLUMNS), "hash_version": None,
    }
    if data is not None and not data:
        out.update(reason="empty_file", detail="0 bytes")
        return out
    if data is None:
        try:
            with open(name, "rb") as f:
                head = f.read(1024)
        except OSError as e:
            out.update(reason="unreadable", detail=f"cannot read file: {_short(e)}")
            return out
    else:
        head = data[:1024]
    ext = os.path.splitext(name)[1].lower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data) if data is not None else name)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            if ext in IMAGE_EXTENSIONS and not _looks_like_text(head):
                # No decoder knows the bytes: random data, a header destroyed, or a format without a
                # plugin here. `unreadable` is kept for files a decoder recognises but cannot decode.
                out.update(reason="unknown_format", detail=f"no image decoder recognises the {ext} file's "
                                                           f"bytes (they start {head[:8].hex(' ')})")
            else:
                kind = "text" if _looks_like_text(head) else "binary data"
                out.update(reason="not_an_image", detail=f"content is {kind}, not an image")
            return out
        try:
            out["format"] = im.format
            out["mode"] = im.mode
            out["n_frames"] = int(getattr(im, "n_frames", 1) or 1)
            orientation = exif_orientation(im)
            out["exif_orientation"] = orientation
            w, h = displayed_size(im.size, orientation)
            out["width"], out["height"] = int(w), int(h)
            if w * h > opts.max_pixels:
                out.update(reason="too_large", detail=f"{w}x{h} = {w * h} px > --max-pixels {opts.max_pixels}")
                return out
            if w <= 0 or h <= 0:
                out.update(reason="unreadable", detail=f"header says {w}x{h}")
                return out
            # Decode every byte of image data, at reduced scale where the codec
            # allows it (JPEG DCT scaling): truncation is still detected, and
            # decoding costs a fraction of a full-size decode. Without hashes
            # no pixels are used, so the smallest scale (1/8) will do.
            im.draft(im.mode, (THUMB_PX, THUMB_PX) if opts.perceptual_hashes else (1, 1))
            im.load()
            if not opts.perceptual_hashes:
                return out
            gray = apply_orientation(to_rgb(im), orientation).convert("L")
            thumb = hash_thumbnail(gray)
            # Local features for copy detection, from the same decode (issue 15).
            keypoints = describe(np.asarray(gray))
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError, MemoryError) as e:
            out.update(reason=_classify_decode_error(e), detail=_short(e))
            return out
        finally:
            im.close()
    out.update(compute_hashes(thumb))
    out["keypoints"] = keypoints
    out["hash_version"] = HASH_VERSION
    return out


# Reasons that come from the bytes alone; everything else is a threshold on the
# probed size (recomputed on every run, so changing --min-side needs no decode).
INTRINSIC_REASONS = frozenset({"empty_file", "not_an_image", "unknown_format", "unreadable", "truncated",
                               "too_large", "special_file"})


def threshold_reason(width: int | None, height: int | None, opts: ProbeOptions) -> tuple[str | None, str | None]:
    """(reason, detail) for a decodable image of displayed size width x height."""
    if not width or not height:
        return None, None
    short, long_ = min(width, height), max(width, height)
    if short < opts.min_side_px:
        return "too_small", f"{width}x{height}: shorter side {short} px < --min-side {opts.min_side_px}"
    if long_ / short > opts.max_aspect:
        return "bad_aspect", f"{width}x{height}: aspect {long_ / short:.1f} > --max-aspect {opts.max_aspect:g}"
    return None, None


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _short(e: BaseException) -> str:
    """``Type: message``, at most 200 characters, without Python object addresses (they name nothing).

    >>> print(_short(ValueError("cannot identify image file <_io.BytesIO object at 0x7f3a2c>")))
    ValueError: cannot identify image file (the file's bytes)
    """
    text = _OBJECT_REPR.sub("(the file's bytes)", f"{type(e).__name__}: {e}")
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass(frozen=True)
class ProbeTask:
    """One file for a worker. ``known`` carries the cached row when size and
    mtime match, so the worker can skip decoding if the sha256 matches too."""

    path: str
    known: dict[str, Any] | None = None


def probe_file(path: str, opts: ProbeOptions, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read ``path`` once: stat, sha256 and :func:`probe_bytes` (or reuse ``known``)."""
    result: dict[str, Any] = {"path": path, "file_size": None, "mtime_ns": None, "sha256": None}
    data: bytes | None = None
    try:
        # O_NONBLOCK: a FIFO named by a list must not block the open; fstat then tells what was opened.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            st = os.fstat(f.fileno())
            result["file_size"], result["mtime_ns"] = st.st_size, st.st_mtime_ns
            if not stat.S_ISREG(st.st_mode):  # a FIFO, a device (/dev/zero), a socket: never read
                result.update(probe_bytes(b"", path, opts))
                result.update(reason="special_file", detail=f"not a regular file ({_file_kind(st.st_mode)})",
                              file_size=None)
                return result
            if st.st_size > opts.max_file_bytes:
                result.update(probe_bytes(b"", path, opts))
                result.update(reason="too_large", detail=f"{st.st_size:,} bytes > --max-file-mb "
                                                         f"{round(opts.max_file_bytes / 2**20, 3):g}; not read")
                return result
            if st.st_size <= IN_MEMORY_MAX_BYTES:
                data = f.read()
                result["sha256"] = hashlib.sha256(data).hexdigest()
            else:  # hashed in a stream and decoded from the file: memory stays flat for big files
                result["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        result.update(probe_bytes(b"", path, opts))
        if isinstance(e, FileNotFoundError):  # gone between the listing and the read (deleted mid-run)
            result.update(reason="missing_file", detail="the file was removed while curate ran")
        else:
            result.update(reason="unreadable", detail=f"cannot read file: {_short(e)}")
        return result
    if known is not None and known.get("sha256") == result["sha256"] and _reusable(known, opts):
        result.update({k: known.get(k) for k in PROBE_COLUMNS})
        result["reused"] = True
        return result
    result.update(probe_bytes(data, path, opts))
    result["reused"] = False
    return result


IN_MEMORY_MAX_BYTES = 64 << 20  # bigger files are streamed, not held whole


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _reusable(known: dict[str, Any], opts: ProbeOptions) -> bool:
    """Can a cached probe stand in for decoding again under ``opts``?"""
    reason = known.get("reason")
    if reason == "too_large":  # not decoded then; decode now if the limit was raised
        w, h = known.get("width") or 0, known.get("height") or 0
        return bool(w * h > opts.max_pixels)
    if reason in INTRINSIC_REASONS or not opts.perceptual_hashes:
        return True
    return known.get("hash_version") == HASH_VERSION


PROBE_COLUMNS = (
    "format", "mode", "n_frames", "exif_orientation", "width", "height",
    "reason", "detail", *HASH_COLUMNS, "hash_version",
)


def _probe_task(args: tuple[ProbeTask, ProbeOptions]) -> dict[str, Any]:
    task, opts = args
    return probe_file(task.path, opts, task.known)
