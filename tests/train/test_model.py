"""curate.train.model: the small CNN and its saved file."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="curate.train needs torch: pip install 'curate[train]'")

from curate.errors import CurateError  # noqa: E402
from curate.train.model import SmallCNN, load_model, model_bytes  # noqa: E402


@pytest.mark.parametrize("img_size, width, n_classes", [
    (32, 16, 2),    # the smallest input: four halvings leave 2x2 cells
    (48, 16, 13),   # a size that does not halve evenly to the end
    (64, 8, 4),     # narrower model
    (100, 32, 3),   # large odd size, wider model
])
def test_logits_shape_for_any_input_size(img_size: int, width: int, n_classes: int):
    model = SmallCNN(n_classes, width=width)
    out = model(torch.zeros(3, 3, img_size, img_size))
    assert out.shape == (3, n_classes)


def test_parameter_count_stays_small():
    n = sum(p.numel() for p in SmallCNN(10).parameters())
    assert 90_000 < n < 110_000  # ~0.1 M at width 16: trains in seconds on a CPU


def test_saved_model_loads_with_classes_and_same_outputs(tmp_path: Path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = SmallCNN(3, width=8).eval()
        x = torch.randn(2, 3, 40, 40)
    path = tmp_path / "model.pt"
    path.write_bytes(model_bytes(model, ["a", "b", "c"], {"img_size": 40, "fit": "letterbox"}))
    loaded, classes, prep = load_model(path)
    assert classes == ["a", "b", "c"] and prep == {"img_size": 40, "fit": "letterbox"}
    assert torch.equal(loaded(x), model(x))
    # the file is plain tensors and strings: it loads without unpickling code
    assert set(torch.load(path, weights_only=True)) == {"format", "state_dict", "classes", "arch", "preprocess"}


def test_a_foreign_file_is_refused_with_the_reason(tmp_path: Path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CurateError) as e:
        load_model(path)
    assert str(e.value) == (f"{path}: format: expected curate.train.classify/1, found None "
                            "(this file was not written by `curate train classify`)")
