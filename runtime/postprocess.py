"""From logits to what people look at: class masks, colour masks and overlays.

All numpy-vectorized; the argmax is a running maximum over classes rather than ``argmax(axis=0)``,
which on a C x H x W array first copies it into H x W x C order (about 1.6x slower at 21 x 513 x
513 on the development CPU).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from runtime.errors import EdgeDeeplabError


def mask_dtype(num_classes: int) -> np.dtype:
    """uint8 masks while class indices fit (they do for VOC/Cityscapes/ADE20K), else int32."""
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.int32)


def argmax_classes(logits: np.ndarray) -> np.ndarray:
    """C x H x W logits -> H x W class indices (the first class wins ties, as numpy's argmax)."""
    if logits.ndim != 3:
        raise EdgeDeeplabError(f"expected C x H x W logits, got shape {logits.shape}")
    channels = logits.shape[0]
    best = logits[0].astype(np.float32, copy=True)
    index = np.zeros(logits.shape[1:], dtype=mask_dtype(channels))
    greater = np.empty(logits.shape[1:], dtype=bool)
    for c in range(1, channels):
        np.greater(logits[c], best, out=greater)
        np.maximum(best, logits[c], out=best)
        np.putmask(index, greater, c)
    return index


def mask_from_logits(logits: np.ndarray, placement) -> np.ndarray:
    """C x H x W logits -> class mask at the original image size, padding cropped away.

    Argmax at model resolution, then a nearest resize: C times less data to resize than the
    logits, and the same mask wherever the resized logits' argmax would not change.
    """
    from runtime.images import resize_mask

    mask = argmax_classes(logits[:, : placement.scaled_h, : placement.scaled_w])  # already mask_dtype
    return resize_mask(mask, placement.orig_h, placement.orig_w)


def restore_mask(mask: np.ndarray, placement) -> np.ndarray:
    """H x W class mask at model input size -> the original image's size, padding cropped away.

    For bundles whose graph takes the argmax: the host's whole per-pixel share is this crop and a
    nearest resize (none at all when the image filled the input), on one byte per pixel.
    """
    from runtime.images import resize_mask

    valid = mask[: placement.scaled_h, : placement.scaled_w]
    if (placement.scaled_h, placement.scaled_w) == (placement.orig_h, placement.orig_w):
        return valid.copy()  # the backend may reuse its output buffer on the next call
    return resize_mask(valid, placement.orig_h, placement.orig_w)


def palette_array(palette: Sequence[Sequence[int]], size: int = 256) -> np.ndarray:
    """``size`` x 3 uint8 lookup table; classes beyond the palette (e.g. 255 = ignore) are black."""
    table = np.zeros((max(size, len(palette)), 3), dtype=np.uint8)
    if len(palette):
        table[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return table


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """H x W class mask -> H x W x 3 uint8 colours via a palette lookup."""
    mask = np.asarray(mask)
    return palette_array(palette, int(mask.max(initial=0)) + 1)[mask]


def overlay(
    image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Blend the colourized mask over the image: ``(1 - alpha) * image + alpha * colour``.

    With OpenCV installed (the video extra) and uint8 class masks, a LUT and ``addWeighted``;
    otherwise integer arithmetic in uint16 (alpha quantized to 1/256). Both round to within one
    grey level of the exact blend, which is all a display needs. The image may be anything
    ``predict`` takes (grayscale, RGBA, 16-bit); it is converted to RGB first, so the result is
    always RGB.
    """
    from runtime.images import _cv2, to_rgb_uint8

    image = to_rgb_uint8(image)
    if not 0.0 <= alpha <= 1.0:
        raise EdgeDeeplabError(f"overlay alpha must be within [0, 1], got {alpha}")
    if image.shape[:2] != mask.shape[:2]:
        raise EdgeDeeplabError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    cv2 = _cv2()
    if cv2 is not None and mask.dtype == np.uint8 and image.dtype == np.uint8:
        # OpenCV's table lookup and weighted add (SIMD, no temporaries): 1.4 ms against 15 ms for
        # the numpy path on a 640x480 frame, which is per-frame host time in the video pipeline.
        table = palette_array(palette).reshape(256, 1, 3)
        colours = cv2.LUT(cv2.merge([mask, mask, mask]), table)
        return cv2.addWeighted(np.ascontiguousarray(image), 1.0 - alpha, colours, alpha, 0.0)
    colours = colorize(mask, palette).astype(np.uint16)
    a = int(round(alpha * 256))
    blended = image.astype(np.uint16) * (256 - a) + colours * a
    blended += 128
    return (blended >> 8).astype(np.uint8)
