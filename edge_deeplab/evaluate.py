"""Scoring: a PyTorch checkpoint or an exported bundle, on a dataset, with the same numpy metrics.

The metrics (``edge_deeplab.metrics``) are torch-free, and bundles are scored through the runtime,
the code path a device uses, so ``edge-deeplab evaluate BUNDLE`` on a Jetson gives figures directly
comparable with the checkpoint's on the training machine.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from edge_deeplab.metrics import SegmentationMetrics
from runtime.progress import progress_bar

DEFAULT_BAND_WIDTHS = (2, 4, 8, 16)


def score_predictions(
    predict: Callable[[np.ndarray], np.ndarray],
    dataset,
    limit: int | None = None,
    band_widths: Iterable[int] = DEFAULT_BAND_WIDTHS,
    progress: bool = True,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """Run ``predict`` (uint8 HxWx3 image -> HxW class mask) over ``dataset`` and summarize.

    Returns mIoU, per-class IoU, pixel accuracy and boundary mIoU for each trimap band width, and
    ``input_size``: the largest height and width among the scored images, the size a bundle must
    take to see every one of them whole (what ``export`` defaults to).
    """
    metrics = SegmentationMetrics(dataset.classes, dataset.ignore_index, tuple(band_widths))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    indices = progress_bar(range(count), desc=desc, unit="img", leave=False, enabled=progress)
    largest = [0, 0]
    for i in indices:
        sample = dataset[i]
        largest = [max(largest[0], sample.image.shape[0]), max(largest[1], sample.image.shape[1])]
        metrics.update(predict(sample.image), sample.mask)
    summary = metrics.summary()
    summary["images"] = count
    summary["input_size"] = largest
    return summary


def torch_predictor(model, device=None) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a model as uint8 image -> class mask, normalizing exactly as the runtime does."""
    import torch

    from runtime.preprocess import normalize

    device = device or next(model.parameters()).device

    @torch.inference_mode()
    def predict(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalize(image))[None].to(device)
        return model(x)[0].argmax(0).to(torch.uint8).cpu().numpy()

    return predict


def evaluate_model(model, dataset, device=None, limit: int | None = None, progress: bool = True, band_widths=DEFAULT_BAND_WIDTHS) -> dict[str, Any]:
    """Score a torch model in eval mode on full-size images (it accepts any height and width)."""
    was_training = model.training
    model.eval()
    try:
        return score_predictions(torch_predictor(model, device), dataset, limit, band_widths, progress)
    finally:
        model.train(was_training)


def _fmt(value: float | None) -> str:
    """A figure, or n/a where it is undefined (no pixel of that kind was scored)."""
    return "   n/a" if value is None or np.isnan(value) else f"{value:.4f}"


def format_table(summary: dict[str, Any], title: str = "") -> str:
    """A plain-text table of a summary: the headline figures, then IoU per class."""
    lines = [title] if title else []
    lines.append(f"  images           {summary['images']}")
    lines.append(f"  mIoU             {_fmt(summary['miou'])}")
    lines.append(f"  pixel accuracy   {_fmt(summary['pixel_accuracy'])}")
    for width, value in summary["boundary_miou"].items():
        lines.append(f"  boundary mIoU {int(width):>2}px {_fmt(value)}")
    lines.append("  per-class IoU:")
    for name, value in summary["per_class_iou"].items():
        lines.append(f"    {name:<20} {_fmt(value)}")
    return "\n".join(lines)
