"""Reading images and label masks into the arrays every reader yields, and writing masks back.

Images in the wild come as grayscale, RGBA, palette or 16-bit files; the model wants uint8 RGB, so
:func:`read_image` converts them all. Masks are the opposite: a palette PNG (VOC style) stores class
indices and a colour table, and the indices are the labels, so :func:`read_mask` never converts
through colour. Images are turned upright by their EXIF orientation, as the runtime does at
inference: labelling tools (labelme, CVAT, Label Studio) draw on the upright picture, so that is
the grid their masks are in. Masks carry no EXIF and are used as stored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_file

# What Pillow raises on truncated, corrupt or unsupported files (SyntaxError for some broken
# headers, DecompressionBombError subclasses Exception directly).
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

# Colour given to index 255 (ignore) in written masks when the palette does not cover it:
# the colour VOC uses for its void label, so written masks look familiar.
IGNORE_COLOUR = (224, 224, 192)


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise EdgeDeeplabError(f"{what} {path} does not exist or is not a file")
    try:
        img = Image.open(path)
        img.load()  # decode now, so a truncated file fails here and not later
    except _READ_ERRORS as exc:
        raise EdgeDeeplabError(f"cannot read {what} {path}: {exc}") from None
    return img


def _wide_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float pixels -> uint8, keeping the relative brightness."""
    if arr.dtype.kind == "f":
        peak = float(np.nanmax(arr)) if arr.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0  # floats in [0, 1] or already in [0, 255]
        return np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255).astype(np.uint8)
    # Pillow opens 16-bit PNGs as "I;16" or "I" (int32): both hold 0..65535 samples.
    return np.clip((arr.astype(np.int64) + 128) // 257, 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any Pillow-readable image, upright, as uint8 HxWx3 RGB (alpha is dropped, not blended)."""
    img = _open(path, "image")
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except _READ_ERRORS as exc:
        raise EdgeDeeplabError(f"cannot read image {path}: broken EXIF orientation ({exc})") from None
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = _wide_to_uint8(np.asarray(img))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except _READ_ERRORS as exc:
            raise EdgeDeeplabError(f"cannot convert image {path} ({img.mode}) to RGB: {exc}") from None
    return np.asarray(img, dtype=np.uint8).copy()


def _colours_to_indices(rgb: np.ndarray, palette: Sequence[Sequence[int]], path: Path) -> np.ndarray:
    """Map an RGB colour mask back to class indices through ``palette``; unknown colours fail."""
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    table = {int(r) << 16 | int(g) << 8 | int(b): i for i, (r, g, b) in enumerate(palette)}
    table.setdefault(IGNORE_COLOUR[0] << 16 | IGNORE_COLOUR[1] << 8 | IGNORE_COLOUR[2], 255)
    uniq, inverse = np.unique(codes, return_inverse=True)
    lut = np.empty(len(uniq), dtype=np.uint8)
    for j, code in enumerate(uniq.tolist()):
        if code not in table:
            colour = (code >> 16 & 255, code >> 8 & 255, code & 255)
            raise EdgeDeeplabError(f"mask {path} has colour {colour}, which is not in the class palette")
        lut[j] = table[code]
    return lut[inverse.reshape(codes.shape)]


def read_mask(path: str | os.PathLike, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Read a label mask as uint8 HxW class indices.

    Palette PNGs give their indices, grayscale files their values. A colour (RGB) mask is only
    accepted together with ``palette``, which maps each colour to its class index; without one an
    RGB mask is an error, because guessing classes from colours silently mislabels.
    """
    path = Path(path)
    img = _open(path, "mask")
    if img.mode in ("P", "L"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("PA", "LA"):
        return np.asarray(img, dtype=np.uint8)[:, :, 0].copy()
    if img.mode == "1":
        return np.asarray(img).astype(np.uint8)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise EdgeDeeplabError(
                f"mask {path} has label values up to {int(arr.max())}; masks hold class indices 0-255"
            )
        return arr.astype(np.uint8)
    if img.mode in ("RGB", "RGBA"):
        if palette is None:
            raise EdgeDeeplabError(
                f"mask {path} is a colour image; masks must be palette or grayscale PNGs of class indices"
            )
        return _colours_to_indices(np.asarray(img.convert("RGB")), palette, path)
    raise EdgeDeeplabError(f"mask {path} has unsupported image mode {img.mode}")


def write_mask_png(
    path: str | os.PathLike,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    overwrite: bool = True,
) -> Path:
    """Write ``mask`` as a palette PNG (indices stay indices, viewers show colours), atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise EdgeDeeplabError(f"a mask must be uint8 HxW, got {mask.dtype} with shape {mask.shape}")
    if len(palette) > 256:
        raise EdgeDeeplabError(f"a PNG palette holds at most 256 colours, got {len(palette)}")
    table = np.zeros((256, 3), dtype=np.uint8)
    table[255] = IGNORE_COLOUR
    if len(palette):
        table[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    # frombytes in mode "P" keeps the indices as they are (converting from "L" would quantize).
    img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    img.putpalette(table.ravel().tolist())
    path = Path(path)
    with atomic_file(path, overwrite) as tmp:
        img.save(tmp, format="PNG")
    return path
