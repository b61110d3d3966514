"""curate.faces.detect: the merging rules on tables of boxes, and real MediaPipe on real photos."""

from __future__ import annotations

import pytest

from curate.faces.detect import (
    DetectorConfig,
    Face,
    FaceDetector,
    confirmed,
    faces_from_json,
    faces_to_json,
    nms_faces,
    tile_evidence,
)
from curate.models import resolve


@pytest.fixture(scope="module")
def model_paths() -> dict[str, str]:
    return {k: str(r.path) for k, r in resolve().items()}


def test_nms_merges_overlaps_and_records_every_pass():
    merged = nms_faces([Face((0, 0, 10, 10), 0.6, "full_range"), Face((1, 1, 11, 11), 0.9, "short_range"),
                        Face((2, 2, 5, 5), 0.8, "full_range/tile"),  # inside the first: counted once
                        Face((50, 50, 60, 60), 0.65, "short_range")])
    assert [(f.xyxy, f.found_by) for f in merged] == [
        ((1, 1, 11, 11), "short_range+full_range/tile+full_range"), ((50, 50, 60, 60), "short_range")]
    # a weak face seen by one pass only is not confirmed; a strong one, or one seen twice, is
    assert confirmed(merged, 0.7) == merged[:1]


SURE = Face((10, 10, 50, 50), 0.9, "short_range+full_range")
WEAK = Face((60, 10, 80, 30), 0.6, "full_range")  # seen by one pass, below sure_score


ELSEWHERE = Face((80, 60, 90, 70), 0.2, "short_range")


@pytest.mark.parametrize("merged, hints, expected", [
    ([SURE], [], []),  # everything settled: no tiles
    ([SURE], [Face((12, 12, 48, 48), 0.3, "full_range")], []),  # a hint on a known face
    ([SURE], [Face((12, 30, 30, 48), 0.3, "full_range")], []),  # inside a known face
    ([SURE], [ELSEWHERE], [ELSEWHERE]),  # a hint elsewhere
    ([SURE, WEAK], [], [WEAK]),  # an unconfirmed face: tiles may confirm it
])
def test_tile_evidence_is_what_the_whole_image_left_open(merged, hints, expected):
    cfg = DetectorConfig()
    assert tile_evidence(merged, confirmed(merged, cfg.sure_score), hints, cfg) == expected


@pytest.mark.parametrize("name, faces_n, passes, cfg", [
    ("skimage_astronaut.png", 1, ["short_range"], {}),  # a portrait: one pass
    ("deepface_couple.jpg", 2, ["short_range"], {}),  # two big, sure faces and nothing else seen: one pass
    ("fr_two_people.jpg", 2, ["short_range", "full_range"] + 4 * ["full_range/tile"], {}),  # weak hints: tiles
    ("insightface_t1.jpg", 6, ["short_range", "full_range"] + 4 * ["full_range/tile"], {}),  # 3 whole, 3 from tiles
    # the child's face is a hint at the bottom right: the 3 tiles that overlap it
    ("fr_obama_and_biden.jpg", 3, ["short_range", "full_range"] + 3 * ["full_range/tile"], {}),
    # without hints: every tile whenever the image is not one portrait face (detector v1)
    ("deepface_couple.jpg", 2, ["short_range", "full_range"] + 4 * ["full_range/tile"], {"hint_min_confidence": 0}),
])
def test_ensemble_runs_only_the_passes_the_image_needs(corpus, model_paths, name, faces_n, passes, cfg):
    from curate.imageio import load_display

    with FaceDetector(model_paths, DetectorConfig(**cfg)) as det:
        calls: list[str] = []
        run = det._run
        det._run = lambda key, rgb: calls.append(key) or run(key, rgb)  # type: ignore[method-assign]
        assert len(det.detect(load_display(corpus / "faces_misc" / name))) == faces_n
    assert calls == passes


def test_faces_survive_json_exactly() -> None:
    faces = [Face((1.25, 2.5, 30.75, 40.0), 0.9123, "short_range+full_range/tile"), Face((0, 0, 5, 5), 0.5, "")]
    assert faces_from_json(faces_to_json(faces)) == faces


def test_cache_key_follows_settings_and_models() -> None:
    models = {"short_range": "a" * 64, "full_range": "b" * 64}
    key = DetectorConfig().cache_key(models)
    assert key == DetectorConfig().cache_key(models) and len(key) == 12
    assert key != DetectorConfig(min_confidence=0.6).cache_key(models)
    assert key != DetectorConfig().cache_key({**models, "full_range": "c" * 64})
    # the short-range detector does not read the full-range model: its key ignores it
    short = DetectorConfig(detector="short-range")
    assert short.cache_key(models) == short.cache_key({**models, "full_range": "c" * 64})
