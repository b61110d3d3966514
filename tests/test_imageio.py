"""curate.imageio: the probe without perceptual hashes (``curate convert``) finds
the same format, size, orientation and drop reason as the full probe, on every
real photo and on cut-off copies of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.hashing import HASH_COLUMNS
from curate.imageio import ProbeOptions, probe_bytes, probe_file

FULL = ProbeOptions(min_side_px=1)
NO_HASHES = ProbeOptions(min_side_px=1, perceptual_hashes=False)
SAME = ("format", "mode", "n_frames", "exif_orientation", "width", "height", "reason")


def test_no_hash_probe_agrees_with_the_full_probe_on_every_corpus_photo(corpus):
    photos = sorted(p for p in (corpus / "photos").iterdir() if p.is_file())
    reasons = set()
    for p in photos:
        full, fast = probe_file(str(p), FULL), probe_file(str(p), NO_HASHES)
        assert {k: fast[k] for k in SAME} == {k: full[k] for k in SAME}, p.name
        assert fast["sha256"] == full["sha256"]
        assert all(fast[k] is None for k in HASH_COLUMNS) and fast["hash_version"] is None
        reasons.add(full["reason"])
    assert {None, "truncated", "unknown_format"} <= reasons  # the corpus has both kinds of bad file


@pytest.mark.parametrize("name, keep_frac", [
    ("imagededup_ukbench09268.jpg", 0.5),  # EXIF orientation 6, cut in the scan data
    ("imagededup_ukbench09268.jpg", 0.98),  # only the last few scan lines missing
    ("pillow_pil_sample_cmyk.jpg", 0.7),
])
def test_truncation_is_caught_at_the_smallest_decode_scale(corpus, name, keep_frac):
    data = (corpus / "photos" / name).read_bytes()
    cut = data[: int(len(data) * keep_frac)]
    assert probe_bytes(cut, name, NO_HASHES)["reason"] == probe_bytes(cut, name, FULL)["reason"] == "truncated"


def test_no_hash_probe_keeps_the_displayed_size_of_an_exif_rotated_photo(corpus):
    r = probe_file(str(Path(corpus / "photos" / "imagededup_ukbench09268.jpg")), NO_HASHES)
    assert r["exif_orientation"] == 6 and r["height"] > r["width"] and r["reason"] is None
