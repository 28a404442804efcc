"""Segmentation metrics from confusion matrices: mIoU, accuracies and boundary (trimap) mIoU.

Everything is accumulated as integer confusion matrices (rows = true class, columns = predicted),
so results over a dataset are exact regardless of batch sizes and can be merged across workers.
Ignore pixels (255 by default) never count. Boundary mIoU follows the trimap experiment of the
DeepLabv3+ paper (Chen et al. 2018, fig. 5): IoU measured only on pixels within a band around the
label boundaries, where the decoder and a finer output stride are expected to help.

numpy only, so evaluation runs on a device without torch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from runtime.errors import EdgeDeeplabError

DEFAULT_WIDTHS = (2, 4, 8, 16, 32)


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` int64 matrix: ``m[true, predicted]``."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise EdgeDeeplabError(f"need at least one class, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: np.ndarray, target: np.ndarray, where: np.ndarray | None = None) -> None:
        """Add one prediction / target pair (any matching shape, e.g. HxW or NxHxW).

        ``where``, a boolean array of the same shape, further restricts which pixels count (the
        boundary bands use it). Predicted ids outside ``[0, num_classes)`` are an error anywhere,
        even on ignored pixels: they mean the model and the class list disagree. Target ids other
        than the classes and the ignore index are an error too.
        """
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape:
            raise EdgeDeeplabError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
        for name, arr in (("prediction", pred), ("target", target)):
            if arr.dtype.kind not in "iu":
                raise EdgeDeeplabError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
        n = self.num_classes
        if pred.size and (pred.min() < 0 or pred.max() >= n):
            bad = pred[(pred < 0) | (pred >= n)].flat[0]
            raise EdgeDeeplabError(f"prediction has class id {int(bad)}, outside 0..{n - 1}")
        valid = target != self.ignore_index
        if where is not None:
            if where.shape != target.shape:
                raise EdgeDeeplabError(f"pixel selection shape {where.shape} differs from target {target.shape}")
            valid &= where
        t = target[valid].astype(np.int64)
        if t.size and (t.min() < 0 or t.max() >= n):
            bad = t[(t < 0) | (t >= n)][0]
            raise EdgeDeeplabError(
                f"target has label {int(bad)}, which is neither a class (0..{n - 1}) nor ignore ({self.ignore_index})"
            )
        p = pred[valid].astype(np.int64)
        self.matrix += np.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another matrix (e.g. from a worker process) over the same classes."""
        if other.num_classes != self.num_classes:
            raise EdgeDeeplabError(f"cannot merge {other.num_classes}-class and {self.num_classes}-class matrices")
        self.matrix += other.matrix

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def per_class_iou(self) -> np.ndarray:
        """IoU per class; NaN for a class that is neither in the targets nor predicted."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes that occur (in targets or predictions); NaN when nothing counted."""
        return _nanmean(self.per_class_iou())

    def pixel_accuracy(self) -> float:
        total = self.total
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def mean_accuracy(self) -> float:
        """Mean over classes present in the targets of the fraction of their pixels found."""
        support = self.matrix.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(support > 0, np.diag(self.matrix) / support, np.nan)
        return _nanmean(recall)

    def summary(self, class_names: Sequence[str]) -> dict:
        """Plain dict for reports and JSON; undefined values (no pixels) are None, not NaN."""
        if len(class_names) != self.num_classes:
            raise EdgeDeeplabError(f"{len(class_names)} class names for a {self.num_classes}-class matrix")
        return {
            "miou": _json_float(self.miou()),
            "per_class_iou": {n: _json_float(v) for n, v in zip(class_names, self.per_class_iou())},
            "pixel_accuracy": _json_float(self.pixel_accuracy()),
            "mean_accuracy": _json_float(self.mean_accuracy()),
            "pixels": self.total,
        }


def _json_float(x: float) -> float | None:
    """NaN (undefined) becomes None, so a summary serializes to valid JSON."""
    return None if np.isnan(x) else float(x)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def boundary_pixels(target: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from one of their 4-neighbours (both sides of every edge).

    The ignore label counts as a label here: in VOC the void band is drawn exactly over object
    outlines, so the pixels next to it are boundary pixels. The image border is not a boundary.
    """
    edge = np.zeros(target.shape, dtype=bool)
    dy = target[1:, :] != target[:-1, :]
    dx = target[:, 1:] != target[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def _distance_along_columns(edge: np.ndarray) -> np.ndarray:
    """Per column, |row - nearest edge row| (inf where a column has no edge pixel)."""
    h = edge.shape[0]
    rows = np.arange(h, dtype=np.float64)[:, None]
    above = np.where(edge, rows, -np.inf)
    np.maximum.accumulate(above, axis=0, out=above)  # nearest edge row at or above
    below = np.where(edge, rows, np.inf)
    below = np.minimum.accumulate(below[::-1], axis=0)[::-1]  # nearest edge row at or below
    return np.minimum(rows - above, below - rows)


def boundary_distance(target: np.ndarray, max_distance: int) -> np.ndarray:
    """Exact Euclidean distance from each pixel to the nearest boundary pixel, capped.

    Separable: a vertical pass gives each pixel's distance to the nearest edge in its column,
    then a horizontal pass takes ``min over |dx| <= cap of (g(x + dx)^2 + dx^2)``; limiting dx to
    the cap keeps this O(H * W * cap) and exact for every distance up to the cap. Values above
    ``max_distance`` come back as ``inf``.
    """
    edge = boundary_pixels(target)
    g2 = _distance_along_columns(edge) ** 2
    g2[g2 > max_distance**2] = np.inf
    w = target.shape[1]
    d2 = g2.copy()
    for dx in range(1, min(max_distance, w - 1) + 1):
        step = float(dx * dx)
        np.minimum(d2[:, dx:], g2[:, :-dx] + step, out=d2[:, dx:])
        np.minimum(d2[:, :-dx], g2[:, dx:] + step, out=d2[:, :-dx])
    d = np.sqrt(d2)
    d[d > max_distance] = np.inf
    return d


def boundary_band(target: np.ndarray, width: int) -> np.ndarray:
    """Pixels less than ``width`` pixels from a label edge: ``width`` pixels on each side of it."""
    if width < 1:
        raise EdgeDeeplabError(f"boundary band width must be at least 1 pixel, got {width}")
    return boundary_distance(target, width) < width


class BoundaryConfusion:
    """One confusion matrix per trimap band width, all from a single distance computation."""

    def __init__(self, num_classes: int, widths: Sequence[int] = DEFAULT_WIDTHS,
                 ignore_index: int = 255) -> None:
        widths = sorted({int(w) for w in widths})
        if not widths or widths[0] < 1:
            raise EdgeDeeplabError(f"boundary band widths must be positive integers, got {widths}")
        self.widths = widths
        self.matrices = {w: ConfusionMatrix(num_classes, ignore_index) for w in widths}

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one HxW prediction / target pair (bands are per image, so no batch axis)."""
        target = np.asarray(target)
        if target.ndim != 2:
            raise EdgeDeeplabError(f"boundary metrics take one HxW mask at a time, got shape {target.shape}")
        dist = boundary_distance(target, self.widths[-1])
        for w, cm in self.matrices.items():
            cm.update(pred, target, where=dist < w)

    def miou_by_width(self) -> dict[int, float | None]:
        """Band width -> boundary mIoU (None where a band held no counted pixel)."""
        return {w: _json_float(cm.miou()) for w, cm in self.matrices.items()}


class SegmentationMetrics:
    """Everything the evaluation and the report need: whole-image and boundary confusion."""

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255,
                 widths: Sequence[int] | None = DEFAULT_WIDTHS) -> None:
        self.class_names = list(class_names)
        self.confusion = ConfusionMatrix(len(self.class_names), ignore_index)
        self.boundary = (BoundaryConfusion(len(self.class_names), widths, ignore_index)
                         if widths else None)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one image (HxW) or a batch (NxHxW) of predictions and targets."""
        pred, target = np.asarray(pred), np.asarray(target)
        self.confusion.update(pred, target)
        if self.boundary is not None:
            if target.ndim == 2:
                self.boundary.update(pred, target)
            else:
                for p, t in zip(pred.reshape(-1, *target.shape[-2:]), target.reshape(-1, *target.shape[-2:])):
                    self.boundary.update(p, t)

    def summary(self) -> dict:
        """:meth:`ConfusionMatrix.summary` plus ``boundary_miou`` {band width: mIoU}."""
        out = self.confusion.summary(self.class_names)
        out["boundary_miou"] = self.boundary.miou_by_width() if self.boundary is not None else {}
        return out


def miou_function(num_classes: int, ignore_index: int):
    """A function (predictions, masks) -> mIoU in [0, 1]: the accuracy guard's yardstick."""
    def miou(predictions, masks) -> float:
        matrix = ConfusionMatrix(num_classes, ignore_index)
        for pred, mask in zip(predictions, masks):
            matrix.update(pred, mask)
        return float(matrix.miou())

    return miou
