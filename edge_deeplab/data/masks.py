"""Reading label masks into the uint8 class-index arrays every dataset reader yields.

Masks are the opposite of images: a palette PNG (VOC style) stores class indices and a colour
table, and the indices are the labels, so :func:`read_mask` never converts through colour, and a
colour mask is read back to indices through the dataset's palette. Masks carry no EXIF and are used
as stored, never shrunk. Images are read (and masks written) by :mod:`runtime.images`, the one
implementation the runtime uses too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from runtime.errors import EdgeDeeplabError
from runtime.images import IGNORE_COLOUR

# What Pillow raises on truncated, corrupt or unsupported files (SyntaxError for some broken
# headers, DecompressionBombError subclasses Exception directly).
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise EdgeDeeplabError(f"mask {path} does not exist or is not a file")
    try:
        img = Image.open(path)
        img.load()  # decode now, so a truncated file fails here and not later
    except _READ_ERRORS as exc:
        raise EdgeDeeplabError(f"cannot read mask {path}: {exc}") from None
    return img


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
    img = _open(path)
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
