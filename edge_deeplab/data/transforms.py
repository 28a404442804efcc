"""Training augmentations that keep masks exact, driven by an explicit numpy Generator.

DeepLabv3+ training uses random scaling (0.5-2.0), random crops padded where the image is too
small, horizontal flips and, here, a light photometric jitter. Masks are only ever resampled with
nearest neighbour, flipped or padded with the ignore index, so no transform can invent a label
that was not in the mask. Every random choice comes from the Generator passed in, so the data
loader can reproduce an epoch exactly from (seed, epoch, index).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from edge_deeplab.data.dataset import IGNORE_INDEX
from runtime.errors import EdgeDeeplabError

# Mean RGB of ImageNet in 0-255: padding with it makes padded areas zero after normalization.
PAD_COLOUR = (124, 116, 104)


class Transform(Protocol):
    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]: ...


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise EdgeDeeplabError(f"crop size must be positive, got {size}")
    return int(h), int(w)


class Compose:
    """Apply transforms in order, all drawing from the same Generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomScale:
    """Resize by a factor drawn uniformly from ``scale_range``: image bilinear, mask nearest."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise EdgeDeeplabError(f"scale range must satisfy 0 < min <= max, got {scale_range}")
        self.scale_range = (float(lo), float(hi))

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = rng.uniform(*self.scale_range)
        h, w = mask.shape
        size = (max(1, round(w * s)), max(1, round(h * s)))  # Pillow wants (width, height)
        if size == (w, h):
            return image, mask
        img = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        msk = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
        return img, msk

    def __repr__(self) -> str:
        return f"RandomScale({self.scale_range})"


class RandomCrop:
    """Crop to ``size``; smaller inputs are first padded (image with the mean colour, mask with
    the ignore index) at the bottom and right, so padding never counts as a class."""

    def __init__(self, size: int | Sequence[int], pad_colour: Sequence[int] = PAD_COLOUR,
                 ignore_index: int = IGNORE_INDEX) -> None:
        self.size = _pair(size)
        self.pad_colour = np.asarray(pad_colour, dtype=np.uint8)
        self.ignore_index = ignore_index

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ch, cw = self.size
        h, w = mask.shape
        if h < ch or w < cw:
            ph, pw = max(ch, h), max(cw, w)
            padded_img = np.empty((ph, pw, 3), dtype=np.uint8)
            padded_img[:] = self.pad_colour
            padded_img[:h, :w] = image
            padded_mask = np.full((ph, pw), self.ignore_index, dtype=np.uint8)
            padded_mask[:h, :w] = mask
            image, mask, h, w = padded_img, padded_mask, ph, pw
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        return image[y:y + ch, x:x + cw], mask[y:y + ch, x:x + cw]

    def __repr__(self) -> str:
        return f"RandomCrop({self.size})"


class HorizontalFlip:
    """Mirror left-right with probability ``p`` (segmentation classes are mirror-symmetric)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.p:
            return image[:, ::-1], mask[:, ::-1]
        return image, mask

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


# RGB <-> YIQ: rotating the I/Q chroma plane shifts hue while keeping luma, with one 3x3 matrix.
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                    dtype=np.float64)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)
_LUMA = _RGB2YIQ[0]


class PhotometricJitter:
    """Random brightness, contrast, saturation and a small hue shift, applied with probability p.

    Each factor is linear in the pixel values, so they are composed into one 3x3 matrix plus an
    offset and applied in a single pass; the mask is untouched.
    """

    def __init__(self, brightness: float = 0.25, contrast: float = 0.25, saturation: float = 0.25,
                 hue: float = 0.03, p: float = 0.8) -> None:
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.hue, self.p = hue, p

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # Draw every factor even when skipping, so the stream consumed is the same either way.
        b = 1.0 + rng.uniform(-self.brightness, self.brightness)
        c = 1.0 + rng.uniform(-self.contrast, self.contrast)
        s = 1.0 + rng.uniform(-self.saturation, self.saturation)
        theta = rng.uniform(-self.hue, self.hue) * 2 * np.pi
        if rng.random() >= self.p:
            return image, mask
        gray = np.outer(np.ones(3), _LUMA)  # rows map RGB to its luma, replicated per channel
        sat = s * np.eye(3) + (1.0 - s) * gray
        rot = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
        hue = _YIQ2RGB @ rot @ _RGB2YIQ
        matrix = b * c * (sat @ hue)
        mean_luma = float(image.reshape(-1, 3).astype(np.float64).mean(axis=0) @ _LUMA)
        offset = b * (1.0 - c) * mean_luma  # contrast blends towards the mean gray level
        out = image.astype(np.float32) @ matrix.T.astype(np.float32) + np.float32(offset + 0.5)
        return np.clip(out, 0, 255).astype(np.uint8), mask

    def __repr__(self) -> str:
        return (f"PhotometricJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue}, p={self.p})")


def train_transform(crop_size: int | Sequence[int], scale_range: tuple[float, float] = (0.5, 2.0),
                    flip: bool = True, jitter: bool = True,
                    ignore_index: int = IGNORE_INDEX) -> Compose:
    """The DeepLab training pipeline: scale, pad-and-crop, flip, (jitter)."""
    steps: list[Transform] = [RandomScale(scale_range), RandomCrop(crop_size, ignore_index=ignore_index)]
    if flip:
        steps.append(HorizontalFlip())
    if jitter:
        steps.append(PhotometricJitter())
    return Compose(steps)


def val_transform() -> Compose:
    """Evaluation sees whole images unchanged (any resizing is the model's business)."""
    return Compose([])
