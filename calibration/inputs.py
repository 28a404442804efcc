"""Turning dataset images into model inputs exactly as the runtime does at inference.

Calibration ranges measured on differently prepared pixels (another resize, another pad colour, a
different normalization) are wrong ranges. So this module calls the runtime's own
:func:`runtime.preprocess.prepare_image` instead of re-implementing any step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from runtime.preprocess import Placement, prepare_image


@dataclass(frozen=True)
class InputSpecLite:
    """The parts of a bundle's input spec that decide how pixels are prepared."""

    height: int
    width: int
    dtype: str  # "float32" (normalized by the runtime) or "uint8" (normalized in the graph)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "pad"


@dataclass(frozen=True)
class PreparedImage:
    """One model input (1 x 3 x H x W) with where the image sits inside it, and its mask."""

    array: np.ndarray
    placement: Placement
    mask: np.ndarray | None
    name: str


def prepare(image: np.ndarray, spec: InputSpecLite) -> tuple[np.ndarray, Placement]:
    """uint8 RGB image -> (1 x 3 x H x W input, placement), the runtime's fit/pad/normalize."""
    array, placement = prepare_image(image, (spec.height, spec.width), spec.resize, spec.dtype, spec.mean, spec.std)
    return array[None], placement


def prepare_samples(
    dataset: Sequence, indices: Iterable[int], spec: InputSpecLite, label: str = "preparing images",
    progress: bool = True,
) -> list[PreparedImage]:
    """Read and prepare the given dataset samples, with a progress bar when stderr is a terminal."""
    from runtime.progress import progress_bar

    indices = list(indices)
    out = []
    for index in progress_bar(indices, desc=label, unit="img", leave=False, enabled=progress):
        sample = dataset[index]
        array, placement = prepare(sample.image, spec)
        out.append(PreparedImage(array, placement, getattr(sample, "mask", None), str(sample.name)))
    return out
