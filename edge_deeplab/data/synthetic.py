"""The built-in synthetic segmentation dataset: a real, small test of segmentation, made on the fly.

Why it exists: every command (train, evaluate, export, calibrate, report) must be runnable and
testable without downloading VOC or Cityscapes, and the numbers it gives must mean something. So
the scenes are built to exercise what DeepLabv3+ is about: thin structures and small objects that
a coarse output stride loses, boundaries that the decoder sharpens, occlusion, and textured
backgrounds whose colours overlap the objects' so that colour alone does not separate the classes.
Yet each class keeps a consistent cue (shape + texture + colour family), so a small MobileNetV2
DeepLabv3+ trained from scratch on a CPU for a few minutes can learn it.

Sample ``i`` of split ``s`` is a pure function of ``(seed, s, i)``: nothing is stored on disk,
train and val use different random streams, and a resumed run sees the same images. Masks are
exact: a pixel gets an object's class when its centre lies inside that object's geometry, and the
topmost object wins where objects overlap. Run ``python -m edge_deeplab.data.synthetic --out DIR``
to look at some samples.
"""

from __future__ import annotations

import colorsys
import math
from typing import Callable

import numpy as np

from edge_deeplab.data.dataset import IGNORE_INDEX, SegmentationDataset, Sample
from runtime.errors import EdgeDeeplabError

CLASSES = ["background", "disc", "box", "triangle", "ring", "wire", "dots"]
PALETTE = [
    (0, 0, 0),
    (230, 40, 40),
    (40, 90, 230),
    (40, 190, 60),
    (250, 170, 20),
    (0, 230, 230),
    (210, 40, 210),
]
BACKGROUND, DISC, BOX, TRIANGLE, RING, WIRE, DOTS = range(len(CLASSES))

# Random streams per split: train and val samples never coincide.
SPLITS = {"train": 0, "val": 1, "test": 2}
# Leading word of every sample's seed sequence: keeps these streams apart from other seeded
# streams in the project (augmentation, shuffling) that use the same small integers.
_STREAM = 0x5E9
DEFAULT_LENGTH = {"train": 1000, "val": 100, "test": 100}
# Bounds of the spec's size and n, checked before anything is drawn: size=200000 would ask for
# 149 GiB for one image's noise field, and an n beyond what len() can return fails inside Python.
MAX_SIZE = 2048
MAX_SAMPLES = 1_000_000

# Colour families as (hue range, saturation range, value range) in HSV, hue in turns. Objects are
# saturated (>= 0.45), backgrounds reach saturation 0.5, so the families overlap with background
# colours at their edges; the wire family is pale instead of saturated.
_FAMILIES: dict[int, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    DISC: ((-0.03, 0.035), (0.5, 0.95), (0.6, 0.95)),
    BOX: ((0.56, 0.66), (0.45, 0.9), (0.55, 0.95)),
    TRIANGLE: ((0.24, 0.38), (0.45, 0.9), (0.5, 0.9)),
    RING: ((0.08, 0.15), (0.6, 1.0), (0.75, 1.0)),
    WIRE: ((0.0, 1.0), (0.0, 0.18), (0.88, 1.0)),
    DOTS: ((0.78, 0.9), (0.5, 0.95), (0.6, 1.0)),
}

# A region painted onto the canvas: top-left corner, boolean coverage, colour (h, w, 3) or (3,).
Layer = tuple[int, int, np.ndarray, np.ndarray]


def describe() -> str:
    """What the scenes contain, printed by ``edge-deeplab datasets preview synthetic``."""
    return (
        "synthetic: 7 classes on textured backgrounds, generated on the fly (numpy only)\n"
        "  background  smooth noise, stripes or gradients in muted colours of any hue, plus soft\n"
        "              saturated stains that borrow object colours (colour alone is not enough)\n"
        "  disc        filled ellipses (aspect 0.7-1), red family, shaded bright centre / dark rim\n"
        "  box         rotated rectangles, blue family, hard stripes along one side\n"
        "  triangle    irregular triangles, green family, linear brightness gradient\n"
        "  ring        annuli (background shows through the hole), orange family, light/dark sectors\n"
        "  wire        1.5-3 px wandering curves, pale/near-white, over or under the shapes\n"
        "  dots        clusters of small 4-10 px dots, magenta family\n"
        "Objects overlap (the mask is the topmost object), may leave the frame, and carry colour\n"
        "jitter and pixel noise. Sample i of a split is a pure function of (seed, split, i)."
    )


def _rgb(rng: np.random.Generator, hues: tuple[float, float], sats: tuple[float, float],
         vals: tuple[float, float]) -> np.ndarray:
    h = rng.uniform(*hues) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*sats), rng.uniform(*vals))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _background_colour(rng: np.random.Generator) -> np.ndarray:
    return _rgb(rng, (0.0, 1.0), (0.0, 0.5), (0.15, 0.8))


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation weights from a coarse grid spanning the whole output."""
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) / n_out * (n_in - 1)
    lo = np.minimum(pos.astype(np.int64), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random grid, values in [0, 1]: cheap, smooth, blob-like texture."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    m = _interp_matrix(size, cells + 1)
    return m @ grid @ m.T


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c1, c2 = _background_colour(rng), _background_colour(rng)
    coords = np.arange(size, dtype=np.float32)
    angle = rng.uniform(0, math.pi)
    proj = coords[None, :] * np.float32(math.cos(angle)) + coords[:, None] * np.float32(math.sin(angle))
    kind = rng.integers(3)
    noise = _smooth_noise(rng, size, int(rng.integers(2, 8)))
    if kind == 0:
        t = noise
    elif kind == 1:
        period = rng.uniform(8, 40) * size / 256
        t = 0.5 + 0.5 * np.sin(2 * math.pi * proj / period + rng.uniform(0, 2 * math.pi))
        t = 0.65 * t + 0.35 * noise
    else:
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        t = 0.75 * t + 0.25 * noise
    img = c1 * (1.0 - t)[..., None] + c2 * t[..., None]
    for _ in range(int(rng.integers(0, 3))):
        img = _stain(rng, img, size)
    return img


def _stain(rng: np.random.Generator, img: np.ndarray, size: int) -> np.ndarray:
    """A soft-edged blob in a saturated, possibly object-like colour that is still background."""
    colour = _rgb(rng, (0.0, 1.0), (0.45, 0.9), (0.5, 0.95))
    field = _smooth_noise(rng, size, int(rng.integers(3, 6)))
    level = rng.uniform(0.6, 0.75)
    alpha = np.clip((field - level) / 0.12, 0.0, 1.0) * rng.uniform(0.5, 0.85)
    return img * (1.0 - alpha[..., None]) + colour * alpha[..., None]


def _bbox(cy: float, cx: float, r: float, size: int) -> tuple[int, int, int, int] | None:
    y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, size)
    x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, size)
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, y1, x0, x1


def _grid(box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a box, as broadcastable column and row."""
    y0, y1, x0, x1 = box
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    return yy, xx


def _centre(rng: np.random.Generator, size: int) -> tuple[float, float]:
    # Slightly beyond the frame, so objects are sometimes cut by the image border.
    cy, cx = rng.uniform(-0.05, 1.05, 2) * size
    return float(cy), float(cx)


def _disc(rng: np.random.Generator, size: int, s: float) -> Layer | None:
    cy, cx = _centre(rng, size)
    r = rng.uniform(12, 56) * s
    aspect, theta = rng.uniform(0.7, 1.0), rng.uniform(0, math.pi)
    box = _bbox(cy, cx, r, size)
    if box is None:
        return None
    yy, xx = _grid(box)
    u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    v = (yy - cy) * math.cos(theta) - (xx - cx) * math.sin(theta)
    rho2 = (u / r) ** 2 + (v / (r * aspect)) ** 2
    inside = rho2 <= 1.0
    shade = 0.45 + 0.55 * np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0))
    return box[0], box[2], inside, _rgb(rng, *_FAMILIES[DISC]) * shade[..., None]


def _box(rng: np.random.Generator, size: int, s: float) -> Layer | None:
    cy, cx = _centre(rng, size)
    a, b = rng.uniform(8, 46, 2) * s
    theta = rng.uniform(0, math.pi)
    box = _bbox(cy, cx, math.hypot(a, b), size)
    if box is None:
        return None
    yy, xx = _grid(box)
    u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    v = (yy - cy) * math.cos(theta) - (xx - cx) * math.sin(theta)
    inside = (np.abs(u) <= a) & (np.abs(v) <= b)
    period = rng.uniform(5, 10) * s
    shade = np.where(np.sin(2 * math.pi * u / period) > 0, 1.0, 0.7).astype(np.float32)
    return box[0], box[2], inside, _rgb(rng, *_FAMILIES[BOX]) * shade[..., None]


def _triangle(rng: np.random.Generator, size: int, s: float) -> Layer | None:
    cy, cx = _centre(rng, size)
    r = rng.uniform(18, 64) * s
    angles = rng.uniform(0, 2 * math.pi) + np.array([0, 2, 4]) * math.pi / 3 + rng.normal(0, 0.22, 3)
    radii = r * rng.uniform(0.75, 1.0, 3)
    py, px = cy + radii * np.sin(angles), cx + radii * np.cos(angles)
    box = _bbox(cy, cx, r, size)
    if box is None:
        return None
    yy, xx = _grid(box)
    # Inside when the point is on the same side of all three edges (either winding order).
    sides = [
        (px[(k + 1) % 3] - px[k]) * (yy - py[k]) - (py[(k + 1) % 3] - py[k]) * (xx - px[k])
        for k in range(3)
    ]
    inside = ((sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)) | (
        (sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0)
    )
    phi = rng.uniform(0, 2 * math.pi)
    t = ((xx - cx) * math.cos(phi) + (yy - cy) * math.sin(phi)) / (2 * r) + 0.5
    shade = 0.6 + 0.4 * np.clip(t, 0.0, 1.0)
    return box[0], box[2], inside, _rgb(rng, *_FAMILIES[TRIANGLE]) * shade[..., None]


def _ring(rng: np.random.Generator, size: int, s: float) -> Layer | None:
    cy, cx = _centre(rng, size)
    r_out = rng.uniform(15, 56) * s
    r_in = r_out - max(rng.uniform(0.25, 0.5) * r_out, 3.0 * s)
    box = _bbox(cy, cx, r_out, size)
    if box is None:
        return None
    yy, xx = _grid(box)
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    inside = (d2 <= r_out**2) & (d2 >= r_in**2)
    sectors = int(rng.integers(6, 13))
    ang = np.arctan2(yy - cy, xx - cx) + rng.uniform(0, math.pi)
    shade = np.where(np.sin(sectors * ang) > 0, 1.0, 0.72).astype(np.float32)
    return box[0], box[2], inside, _rgb(rng, *_FAMILIES[RING]) * shade[..., None]


def _wire(rng: np.random.Generator, size: int, s: float) -> Layer | None:
    """A wandering polyline 1.5-3 px wide: rasterized segment by segment, each in its own box."""
    half = rng.uniform(0.75, 1.6) * max(s, 0.5)
    n_steps = int(rng.integers(15, 60))
    step = 7.0 * s
    y, x = _centre(rng, size)
    heading, turn = rng.uniform(0, 2 * math.pi), 0.0
    pts = [(y, x)]
    for _ in range(n_steps):
        turn = float(np.clip(turn + rng.normal(0, 0.07), -0.25, 0.25))
        heading += turn
        y, x = y + step * math.sin(heading), x + step * math.cos(heading)
        pts.append((y, x))
    inside = np.zeros((size, size), dtype=bool)
    for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
        box = _bbox((y0 + y1) / 2, (x0 + x1) / 2, step / 2 + half, size)
        if box is None:
            continue
        yy, xx = _grid(box)
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx), 0.0, 1.0)
        d2 = (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2
        inside[box[0]:box[1], box[2]:box[3]] |= d2 <= half * half
    return 0, 0, inside, _rgb(rng, *_FAMILIES[WIRE])


def _dots(rng: np.random.Generator, size: int, s: float) -> Layer | None:
    cy, cx = _centre(rng, size)
    spread = rng.uniform(4, 14) * s
    n = int(rng.integers(6, 20))
    ys, xs = cy + rng.normal(0, spread, n), cx + rng.normal(0, spread, n)
    radii = rng.uniform(2.0, 5.0, n) * s
    reach = float(np.max(np.hypot(ys - cy, xs - cx) + radii))
    box = _bbox(cy, cx, reach, size)
    if box is None:
        return None
    yy, xx = _grid(box)
    inside = np.zeros((box[1] - box[0], box[3] - box[2]), dtype=bool)
    shade = np.ones(inside.shape, dtype=np.float32)
    for y, x, r in zip(ys, xs, radii):
        hit = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        inside |= hit
        shade[hit] = rng.uniform(0.8, 1.0)
    return box[0], box[2], inside, _rgb(rng, *_FAMILIES[DOTS]) * shade[..., None]


_SHAPES: dict[int, Callable[[np.random.Generator, int, float], Layer | None]] = {
    DISC: _disc,
    BOX: _box,
    TRIANGLE: _triangle,
    RING: _ring,
    WIRE: _wire,
    DOTS: _dots,
}


def render(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: (uint8 size x size x 3 RGB image, uint8 size x size mask)."""
    s = size / 256
    image = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    classes = list(rng.choice([DISC, BOX, TRIANGLE, RING], size=int(rng.integers(5, 11))))
    classes += [WIRE] * int(rng.integers(1, 5)) + [DOTS] * int(rng.integers(1, 4))
    for cls in rng.permutation(classes):
        layer = _SHAPES[int(cls)](rng, size, s)
        if layer is None:
            continue
        y0, x0, inside, colour = layer
        h, w = inside.shape
        region = image[y0:y0 + h, x0:x0 + w]
        region[inside] = colour[inside] if colour.ndim == 3 else colour
        mask[y0:y0 + h, x0:x0 + w][inside] = cls
    sigma = np.float32(rng.uniform(2.0, 7.0))
    image += rng.standard_normal(image.shape, dtype=np.float32) * sigma + np.float32(0.5)
    return np.clip(image, 0, 255).astype(np.uint8), mask


class SyntheticShapes(SegmentationDataset):
    """The built-in synthetic dataset (see the module docstring and :func:`describe`)."""

    name = "synthetic"
    classes = CLASSES
    palette = PALETTE
    ignore_index = IGNORE_INDEX

    def __init__(self, split: str = "train", seed: int = 0, size: int = 256,
                 n: int | None = None, cache: bool = True) -> None:
        if split not in SPLITS:
            raise EdgeDeeplabError(f"synthetic has splits {', '.join(SPLITS)}; got {split!r}")
        if not 32 <= size <= MAX_SIZE:
            raise EdgeDeeplabError(f"synthetic image size must be 32 to {MAX_SIZE}, got {size}")
        if n is not None and not 1 <= n <= MAX_SAMPLES:
            raise EdgeDeeplabError(f"synthetic needs n from 1 to {MAX_SAMPLES} samples, got {n}")
        if seed < 0:
            raise EdgeDeeplabError(f"synthetic seed must be 0 or more, got {seed}")
        self.split, self.seed, self.size = split, int(seed), int(size)
        self.length = DEFAULT_LENGTH[split] if n is None else int(n)
        self._cache: dict[int, Sample] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng([_STREAM, self.seed, SPLITS[self.split], index])
        image, mask = render(rng, self.size)
        sample = Sample(image=image, mask=mask, name=f"{self.split}_{index:05d}")
        if self._cache is not None:
            self._cache[index] = sample
        return sample

    def __repr__(self) -> str:
        return f"SyntheticShapes(split={self.split!r}, seed={self.seed}, size={self.size}, n={self.length})"


_OPTIONS = {"seed": int, "size": int, "n": int, "cache": lambda v: v.lower() in ("1", "true", "yes")}


def from_spec(spec: str, split: str) -> SyntheticShapes:
    """``synthetic`` or ``synthetic:seed=3,size=256,n=400,cache=1`` -> dataset for ``split``."""
    _, _, opts = spec.partition(":")
    kwargs: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in opts.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _OPTIONS:
            raise EdgeDeeplabError(
                f"bad synthetic option {item!r} in {spec!r}; use key=value with keys {', '.join(_OPTIONS)}"
            )
        try:
            kwargs[key] = _OPTIONS[key](value.strip())
        except ValueError:
            raise EdgeDeeplabError(f"synthetic option {key} needs a number, got {value!r}") from None
    return SyntheticShapes(split=split, **kwargs)  # type: ignore[arg-type]
