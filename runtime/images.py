"""Images in and out: any picture becomes uint8 HxWx3 RGB; class masks become PNGs; resizing.

Cameras and datasets hand over grayscale, RGBA, palette, 16-bit and float pictures; the model
wants RGB bytes. This is the one image reader and the one mask writer of the project: the runtime,
the calibration set and the dataset readers (training, evaluation, reports) all read pixels through
:func:`read_image`, so a picture gives the same bytes wherever it is read. Resizing uses OpenCV
when it is installed (several times faster for masks) and Pillow otherwise; both paths use
centre-aligned nearest for masks and area-averaging when shrinking images, so results agree to
within rounding whichever is present.
"""

from __future__ import annotations

import importlib.util
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import numpy as np

from runtime.errors import EdgeDeeplabError

# Images are decoded to at most this many pixels (50 MP, beyond any phone or machine-vision
# camera's output); larger files are shrunk while decoding, see open_image.
MAX_PIXELS = 50_000_000

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Pillow's single-channel modes with more than 8 bits: 16/32-bit integer and 32-bit float.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")

# Colour given to index 255 (ignore) in written masks when the palette does not cover it:
# the colour VOC uses for its void label, so written masks look familiar.
IGNORE_COLOUR = (224, 224, 192)


@lru_cache(maxsize=1)
def _cv2() -> Any | None:
    """OpenCV if installed (the ``video`` extra), imported on first use only."""
    if importlib.util.find_spec("cv2") is None:
        return None
    import cv2

    return cv2


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert grayscale, RGBA, single-channel, 16-bit or float [0, 1] arrays to uint8 HxWx3 RGB.

    16-bit data is mapped over its full range (65535 -> 255); alpha is dropped (a segmentation
    model has no use for it and compositing would invent a background colour). Floats are always
    taken as [0, 1] (NaN as 0, the rest clipped), never rescaled by the brightest pixel: guessing
    the range from the content would make a dark frame of a [0, 255] sequence 255 times brighter
    than its neighbours.
    """
    array = np.asarray(image)
    if array.dtype == object or array.ndim == 0:
        raise EdgeDeeplabError(
            f"expected an image (a numpy array, or a file path to predict), got {type(image).__name__} {image!r:.80}"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise EdgeDeeplabError(f"expected an HxW, HxWx3 or HxWx4 image, got an array of shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise EdgeDeeplabError(f"image is empty (shape {array.shape})")
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif array.dtype.kind == "f":
        array = np.clip(np.rint(np.nan_to_num(array) * 255.0), 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if array.min(initial=0) < 0 or array.max(initial=0) > 255:
            raise EdgeDeeplabError(f"image of dtype {array.dtype} has values outside 0..255")
        array = array.astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def read_image(path: str | Path) -> np.ndarray:
    """Read any image file Pillow understands as uint8 HxWx3 RGB; one clear error if it cannot.

    The picture comes upright (EXIF orientation applied: phones store photos sideways and say so
    in a tag; labelling tools draw on the upright picture, so that is the grid masks are in) and at
    most :data:`MAX_PIXELS` pixels (see :func:`open_image`). 16-bit and float files are converted
    as :func:`to_rgb_uint8` converts arrays.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with open_image(path) as img:
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode in _WIDE_MODES:
                array = np.asarray(img)
                if array.dtype.kind in "iu" and array.dtype != np.uint16:
                    array = np.clip(array, 0, 65535).astype(np.uint16)
                return to_rgb_uint8(array)
            # Pillow's RGB conversion drops alpha and expands grayscale, palette and CMYK.
            return to_rgb_uint8(np.asarray(img if img.mode == "RGB" else img.convert("RGB")))
    except FileNotFoundError:
        raise EdgeDeeplabError(f"cannot read image {path}: no such file") from None
    except Image.DecompressionBombError as exc:
        raise EdgeDeeplabError(f"cannot read image {path}: refused, too many pixels to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise EdgeDeeplabError(f"cannot read image {path}: {exc}") from None


# What ``Segmenter.predict`` takes: pixels, or the path of an image file.
ImageInput = Union[np.ndarray, str, os.PathLike]


def read_if_path(image: ImageInput) -> np.ndarray:
    """The pixels of ``image``: read from disk when it is a path (``seg.predict("photo.jpg")``)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return image


def open_image(path: Path) -> Any:
    """Open and decode an image file, shrunk while decoding when it has more than MAX_PIXELS pixels.

    A 50000x50000 PNG is 2.5 gigapixels: Pillow refuses anything above twice its
    ``MAX_IMAGE_PIXELS`` (about 179 MP) as a possible decompression bomb, before decoding. Below
    that, a picture larger than :data:`MAX_PIXELS` is reduced by an integer factor to fit: JPEGs
    already in the decoder (``draft`` decodes at 1/2, 1/4 or 1/8 scale from the DCT coefficients,
    so the full image never exists in memory), other formats right after decoding (``reduce``).
    No model runs at such sizes, so nothing is lost but time and memory.
    """
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        # Between MAX_IMAGE_PIXELS and twice it Pillow only warns; the cap below handles those sizes.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    try:
        width, height = img.size
        factor = math.ceil(math.sqrt(width * height / MAX_PIXELS)) if width * height > MAX_PIXELS else 1
        if factor > 1 and img.format == "JPEG":
            img.draft("RGB", (width // factor, height // factor))
        img.load()
        width, height = img.size
        if width * height > MAX_PIXELS:
            reduced = img.reduce(math.ceil(math.sqrt(width * height / MAX_PIXELS)))
            img.close()
            img = reduced
    except BaseException:
        img.close()
        raise
    return img


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted so outputs come in a stable order."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an HxWxC uint8 image: area-averaging when shrinking, bilinear when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    cv2 = _cv2()
    if cv2 is not None:
        flag = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(image, (width, height), interpolation=flag)
    from PIL import Image

    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((width, height), method))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a class mask (centre-aligned, so no half-pixel shift)."""
    if mask.shape[:2] == (height, width):
        return mask
    cv2 = _cv2()
    if cv2 is not None and mask.dtype in (np.uint8, np.uint16, np.int16, np.int32):
        return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.intp), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.intp), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def resize_logits(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of C x h x w float logits to C x height x width (align_corners=False)."""
    channels, in_h, in_w = logits.shape
    if (in_h, in_w) == (height, width):
        return logits
    cv2 = _cv2()
    if cv2 is not None:
        # cv2 handles at most 512 channels per call; split to stay within that.
        hwc = np.ascontiguousarray(logits.transpose(1, 2, 0), dtype=np.float32)
        parts = [
            cv2.resize(hwc[:, :, i : i + 512], (width, height), interpolation=cv2.INTER_LINEAR).reshape(
                height, width, -1
            )
            for i in range(0, channels, 512)
        ]
        return np.ascontiguousarray(np.concatenate(parts, axis=2).transpose(2, 0, 1))

    def axis_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(np.intp)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (pos - low).astype(np.float32)

    r0, r1, wr = axis_weights(height, in_h)
    c0, c1, wc = axis_weights(width, in_w)
    rows = logits[:, r0, :] * (1 - wr)[None, :, None] + logits[:, r1, :] * wr[None, :, None]
    return rows[:, :, c0] * (1 - wc)[None, None, :] + rows[:, :, c1] * wc[None, None, :]


def write_image(path: str | Path, rgb: np.ndarray, overwrite: bool = True) -> Path:
    """Write an RGB image atomically; the format follows the file suffix (PNG, JPEG, ...)."""
    from PIL import Image

    from runtime.files import atomic_file

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_file(path, overwrite) as tmp:
        Image.fromarray(rgb).save(tmp, format=fmt)
    return path


def write_mask(path: str | Path, mask: np.ndarray, palette, overwrite: bool = True) -> Path:
    """Write a class-index mask as a PNG, atomically: paletted (index values + colours, index 255
    in :data:`IGNORE_COLOUR` unless the palette covers it) when classes fit 8 bits, else 16-bit
    grayscale, so the file holds the exact class indices either way."""
    from PIL import Image

    from runtime.files import atomic_file

    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype.kind not in "iu" or mask.min(initial=0) < 0:
        raise EdgeDeeplabError(f"a mask must be HxW class indices (unsigned integers), got {mask.dtype} "
                               f"with shape {mask.shape}")
    path = Path(path)
    if mask.max(initial=0) < 256:
        index = np.ascontiguousarray(mask, dtype=np.uint8)
        # frombytes in mode "P" keeps the indices as they are (converting from "L" would quantize).
        img = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
        flat = np.zeros((256, 3), dtype=np.uint8)
        flat[255] = IGNORE_COLOUR
        colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
        flat[: len(colours)] = colours
        img.putpalette(flat.ravel().tolist())
    else:
        img = Image.fromarray(mask.astype(np.uint16))
    with atomic_file(path, overwrite) as tmp:
        img.save(tmp, format="PNG")
    return path
