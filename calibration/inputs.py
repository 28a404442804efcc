"""Turning dataset images into model inputs exactly as the runtime does at inference.

Calibration ranges measured on differently prepared pixels (another resize, another pad colour, a
different normalization) are wrong ranges. So this module composes the runtime's own functions
(:func:`runtime.preprocess.plan_placement`, :func:`runtime.images.resize_image`,
:func:`runtime.preprocess.to_input`) instead of re-implementing any step.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from runtime.images import resize_image, resize_mask, to_rgb_uint8
from runtime.preprocess import Placement, plan_placement, to_input


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
    image = to_rgb_uint8(image)
    placement = plan_placement(image.shape[0], image.shape[1], (spec.height, spec.width), spec.resize)
    scaled = resize_image(image, placement.scaled_h, placement.scaled_w)
    array = to_input(scaled, placement, spec.dtype, spec.mean, spec.std)
    return array[None], placement


def prepare_samples(
    dataset: Sequence, indices: Iterable[int], spec: InputSpecLite, label: str = "preparing images"
) -> list[PreparedImage]:
    """Read and prepare the given dataset samples, with a progress bar on a terminal."""
    from tqdm import tqdm

    indices = list(indices)
    out = []
    for index in tqdm(indices, desc=label, unit="img", disable=not sys.stderr.isatty(), leave=False):
        sample = dataset[index]
        array, placement = prepare(sample.image, spec)
        out.append(PreparedImage(array, placement, getattr(sample, "mask", None), str(sample.name)))
    return out


def logits_to_mask(logits: np.ndarray, placement: Placement) -> np.ndarray:
    """1 x C x H x W logits -> class mask at the original image size (padding cropped away).

    Argmax at model resolution, then a nearest resize: the runtime's default ``upsample="mask"``.
    """
    cropped = logits[0, :, : placement.scaled_h, : placement.scaled_w]
    pred = cropped.argmax(axis=0).astype(np.uint8)
    return resize_mask(pred, placement.orig_h, placement.orig_w)
