"""Image preprocessing shared by training, calibration and inference.

One function normalizes pixels for every stage, so a model never sees differently prepared images
in training, INT8 calibration and on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.errors import EdgeDeeplabError

# ImageNet statistics on RGB in [0, 1]: the usual choice, and what torchvision-format backbone
# weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 3xHxW, ``(pixel / 255 - mean) / std``."""
    scale = np.asarray(std, dtype=np.float32) * 255.0
    offset = np.asarray(mean, dtype=np.float32) * 255.0
    out = (image.astype(np.float32) - offset) / scale
    return np.ascontiguousarray(out.transpose(2, 0, 1))


@dataclass(frozen=True)
class Placement:
    """Where an image went inside the model input, so the output can be mapped back.

    The image (``orig_h`` x ``orig_w``) was resized to ``scaled_h`` x ``scaled_w`` and placed at the
    top-left of a ``input_h`` x ``input_w`` input; the rest is padding.
    """

    orig_h: int
    orig_w: int
    scaled_h: int
    scaled_w: int
    input_h: int
    input_w: int


def plan_placement(
    height: int,
    width: int,
    static_hw: tuple[int, int] | None,
    resize: str = "pad",
    max_hw: tuple[int, int] | None = None,
    multiple: int = 1,
) -> Placement:
    """Decide how an image of ``height`` x ``width`` is fitted to the model input.

    ``static_hw``: the fixed input size, or ``None`` for a dynamic-shape model. ``resize`` is the
    manifest's ``pad`` (shrink only if too large, keep the aspect ratio, pad bottom/right) or
    ``stretch`` (resize to exactly the input size). ``max_hw`` bounds a dynamic input (TensorRT's
    optimization profile); ``multiple`` pads a dynamic input's sides up to a multiple.
    """
    if static_hw is not None:
        in_h, in_w = static_hw
        if resize == "stretch":
            return Placement(height, width, in_h, in_w, in_h, in_w)
        if resize != "pad":
            raise EdgeDeeplabError(f"unknown input resize mode {resize!r}; expected 'pad' or 'stretch'")
        scaled_h, scaled_w = _shrink_to_fit(height, width, in_h, in_w)
        return Placement(height, width, scaled_h, scaled_w, in_h, in_w)
    scaled_h, scaled_w = (height, width) if max_hw is None else _shrink_to_fit(height, width, *max_hw)
    in_h = -(-scaled_h // multiple) * multiple
    in_w = -(-scaled_w // multiple) * multiple
    if max_hw is not None:
        in_h, in_w = min(in_h, max(max_hw[0], scaled_h)), min(in_w, max(max_hw[1], scaled_w))
    return Placement(height, width, scaled_h, scaled_w, in_h, in_w)


def _shrink_to_fit(height: int, width: int, max_h: int, max_w: int) -> tuple[int, int]:
    """Largest size with the image's aspect ratio inside ``max_h`` x ``max_w`` (never enlarges)."""
    if height <= max_h and width <= max_w:
        return height, width
    scale = min(max_h / height, max_w / width)
    return max(1, min(max_h, round(height * scale))), max(1, min(max_w, round(width * scale)))


def pad_value(dtype: str, mean) -> np.ndarray:
    """Fill for the padded area: the mean colour, i.e. zero after normalization.

    Padding with the mean keeps the padded area "neutral" for a network trained on normalized
    inputs, the same convention DeepLab's reference evaluation uses.
    """
    if dtype == "uint8":
        return np.rint(np.asarray(mean, dtype=np.float32) * 255.0).astype(np.uint8)
    return np.zeros(3, dtype=np.float32)


def to_input(image: np.ndarray, placement: Placement, dtype: str, mean, std) -> np.ndarray:
    """uint8 HxWx3 RGB (already at the scaled size) -> one 3 x input_h x input_w model input."""
    if dtype == "uint8":
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    elif dtype == "float32":
        chw = normalize(image, mean, std)
    else:
        raise EdgeDeeplabError(f"unsupported input dtype {dtype!r}; expected 'float32' or 'uint8'")
    if (placement.input_h, placement.input_w) == (placement.scaled_h, placement.scaled_w):
        return chw
    out = np.empty((3, placement.input_h, placement.input_w), dtype=chw.dtype)
    out[:] = pad_value(dtype, mean)[:, None, None]
    out[:, : placement.scaled_h, : placement.scaled_w] = chw
    return out


def prepare_image(
    image: np.ndarray,
    static_hw: tuple[int, int] | None,
    resize: str,
    dtype: str,
    mean,
    std,
    max_hw: tuple[int, int] | None = None,
    multiple: int = 1,
) -> tuple[np.ndarray, Placement]:
    """Any image -> (3 x H x W model input, placement): convert, fit, resize, normalize, pad.

    The single definition of how pixels reach a model, used at inference by the Segmenter and for
    INT8 calibration, so calibration ranges are measured on exactly what the device will feed.
    """
    from runtime.images import resize_image, to_rgb_uint8

    rgb = to_rgb_uint8(image)
    placement = plan_placement(rgb.shape[0], rgb.shape[1], static_hw, resize, max_hw, multiple)
    scaled = resize_image(rgb, placement.scaled_h, placement.scaled_w)
    return to_input(scaled, placement, dtype, mean, std), placement
