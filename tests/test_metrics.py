"""Confusion-matrix metrics and boundary (trimap) bands against hand-computed examples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_deeplab.metrics import (
    BoundaryConfusion,
    ConfusionMatrix,
    SegmentationMetrics,
    boundary_band,
    boundary_distance,
    boundary_pixels,
)
from runtime.errors import EdgeDeeplabError

# Five counted pixels, one ignored: (true, pred) = (0,0) (0,1) (1,1) (1,1) (2,0); (255, 2) ignored.
TARGET = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 0, 2]], dtype=np.int64)


def test_confusion_matrix_by_hand():
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = expected[2, 0] = 1
    expected[1, 1] = 2
    assert np.array_equal(cm.matrix, expected) and cm.total == 5
    iou = cm.per_class_iou()
    # class 0: tp 1 / (row 2 + col 2 - 1); class 1: 2 / (2 + 3 - 2); class 2: 0 / 1; class 3 absent.
    assert np.allclose(iou[:3], [1 / 3, 2 / 3, 0.0]) and math.isnan(iou[3])
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    assert cm.mean_accuracy() == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_accumulation_batches_merge_and_reset():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(PRED, TARGET)
    a.update(PRED, TARGET)
    b.update(np.stack([PRED, PRED]), np.stack([TARGET, TARGET]))  # N x H x W in one call
    assert np.array_equal(a.matrix, b.matrix)
    a.merge(b)
    assert a.total == 20
    a.reset()
    assert a.total == 0 and math.isnan(a.miou()) and math.isnan(a.pixel_accuracy())
    with pytest.raises(EdgeDeeplabError, match="merge"):
        a.merge(ConfusionMatrix(4))


def test_predicted_but_absent_class_counts_as_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[2, 0]]), np.array([[0, 0]], dtype=np.uint8))
    iou = cm.per_class_iou()
    assert iou[0] == pytest.approx(0.5) and iou[2] == 0.0 and math.isnan(iou[1])


def test_ignore_pixels_never_count():
    target = np.full((4, 4), 255, dtype=np.uint8)
    target[0, 0] = 1
    pred = np.zeros((4, 4), dtype=np.uint8)
    pred[0, 0] = 1
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    assert cm.total == 1 and cm.miou() == 1.0
    custom = ConfusionMatrix(2, ignore_index=0)
    custom.update(np.ones((1, 3), np.int64), np.array([[0, 1, 0]], np.uint8))
    assert custom.total == 1


@pytest.mark.parametrize("pred, message", [
    (np.array([[0, 3, 1], [1, 0, 0]]), "class id 3"),
    (np.array([[0, 0, 1], [1, 0, 255]]), "class id 255"),  # even on an ignored pixel
    (np.array([[0, -1, 1], [1, 0, 0]]), "class id -1"),
    (np.zeros((2, 3), dtype=np.float32), "integer"),
    (np.zeros((3, 2), dtype=np.int64), "shape"),
])
def test_bad_predictions_are_errors(pred, message):
    with pytest.raises(EdgeDeeplabError, match=message):
        ConfusionMatrix(3).update(pred, TARGET)


def test_unknown_target_label_is_an_error():
    with pytest.raises(EdgeDeeplabError, match="label 7"):
        ConfusionMatrix(3).update(np.zeros((1, 2), np.int64), np.array([[0, 7]], np.uint8))


def _halves(h: int = 5, w: int = 8, split: int = 4) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[:, split:] = 1
    return mask


def test_boundary_pixels_and_bands_on_a_vertical_edge():
    target = _halves()
    assert np.array_equal(np.flatnonzero(boundary_pixels(target)[0]), [3, 4])
    assert np.array_equal(boundary_distance(target, 8)[0], [3, 2, 1, 0, 0, 1, 2, 3])
    for width, cols in [(1, [3, 4]), (2, [2, 3, 4, 5]), (3, [1, 2, 3, 4, 5, 6])]:
        band = boundary_band(target, width)
        assert (band == band[0]).all()  # same in every row
        assert np.array_equal(np.flatnonzero(band[0]), cols)
    with pytest.raises(EdgeDeeplabError, match="at least 1"):
        boundary_band(target, 0)


def test_uniform_mask_has_no_boundary():
    target = np.full((6, 6), 2, dtype=np.uint8)
    assert not boundary_pixels(target).any()
    assert np.isinf(boundary_distance(target, 4)).all()


def test_ignore_edges_are_boundaries():
    target = np.zeros((3, 6), dtype=np.uint8)
    target[:, 3:] = 255
    assert np.array_equal(np.flatnonzero(boundary_pixels(target)[1]), [2, 3])


def test_boundary_distance_is_euclidean():
    """Compare with brute force over all boundary pixels on random blocky masks."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        target = np.repeat(np.repeat(rng.integers(0, 3, (4, 5)), 5, 0), 4, 1).astype(np.uint8)
        edge_yx = np.argwhere(boundary_pixels(target))
        yy, xx = np.mgrid[: target.shape[0], : target.shape[1]]
        brute = np.sqrt(((yy[..., None] - edge_yx[:, 0]) ** 2 + (xx[..., None] - edge_yx[:, 1]) ** 2).min(-1))
        cap = 6
        got = boundary_distance(target, cap)
        near = brute <= cap
        assert np.allclose(got[near], brute[near])
        assert np.isinf(got[~near]).all()
    dot = np.zeros((9, 9), dtype=np.uint8)
    dot[4, 4] = 1
    assert boundary_distance(dot, 5)[6, 6] == pytest.approx(math.sqrt(5))


def test_boundary_confusion_by_hand():
    target = _halves()
    pred = _halves(split=5)  # the predicted edge is one column too far right
    bc = BoundaryConfusion(2, widths=(2, 1))
    bc.update(pred, target)
    assert bc.widths == [1, 2]
    # Width 1 = columns 3, 4: column 3 right (0->0), column 4 wrong (1->0).
    assert np.array_equal(bc.matrices[1].matrix, [[5, 0], [5, 0]])
    # Width 2 = columns 2..5.
    assert np.array_equal(bc.matrices[2].matrix, [[10, 0], [5, 5]])
    assert bc.miou_by_width() == {1: pytest.approx((0.5 + 0.0) / 2), 2: pytest.approx((10 / 15 + 5 / 10) / 2)}
    with pytest.raises(EdgeDeeplabError, match="one HxW"):
        bc.update(pred[None], target[None])
    with pytest.raises(EdgeDeeplabError, match="positive"):
        BoundaryConfusion(2, widths=(0, 2))


def test_summary_names_classes_and_is_json():
    metrics = SegmentationMetrics(["bg", "a", "b", "never"], widths=(1, 2))
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]], dtype=np.uint8)
    pred = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [2, 0, 3, 3]], dtype=np.int64)
    metrics.update(np.stack([pred]), np.stack([target]))
    s = metrics.summary()
    # bg: tp 3, row 4, col 4 -> 3/5; a: 4/5; b: 1/2; never: predicted only on ignore -> absent.
    assert s["per_class_iou"] == {"bg": pytest.approx(0.6), "a": pytest.approx(0.8),
                                  "b": pytest.approx(0.5), "never": None}
    assert s["miou"] == pytest.approx((0.6 + 0.8 + 0.5) / 3)
    assert s["pixel_accuracy"] == pytest.approx(8 / 10) and s["pixels"] == 10
    assert set(s["boundary_miou"]) == {1, 2}
    # Width 2 reaches every pixel of this small mask, so it equals the whole-image mIoU.
    assert s["boundary_miou"][2] == pytest.approx(s["miou"])
    assert s["boundary_miou"][1] <= s["miou"]
    json.dumps(s, allow_nan=False)
    assert SegmentationMetrics(["x"], widths=None).summary()["boundary_miou"] == {}
    with pytest.raises(EdgeDeeplabError, match="class names"):
        metrics.confusion.summary(["bg", "a"])


def test_empty_band_reports_none():
    bc = BoundaryConfusion(2, widths=(2,))
    bc.update(np.zeros((4, 4), np.int64), np.zeros((4, 4), np.uint8))  # no edges, nothing counted
    assert bc.miou_by_width() == {2: None}
