"""Choosing the representative calibration set: deterministic, and covering every class.

INT8 ranges are only as good as the activations seen while calibrating. A class that never appears
in the calibration images leaves the activations that detect it uncalibrated (clipped), which shows
up as that class's IoU collapsing after quantization. So the set is built greedily to cover every
class present in the dataset first, then filled with seeded random picks so the rest of the set
follows the dataset's own distribution. Same dataset + count + seed -> same images, so a calibration
cache keyed by the set stays valid.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from runtime.errors import EdgeDeeplabError


class LabelledImage(Protocol):
    """What calibration needs from a dataset sample (``edge_deeplab.data.Sample`` fits)."""

    image: np.ndarray
    mask: np.ndarray | None
    name: str


@dataclass(frozen=True)
class CalibrationSet:
    """The chosen images (dataset indices, in pick order) and which classes they cover."""

    indices: tuple[int, ...]
    names: tuple[str, ...]
    covered_classes: tuple[int, ...]
    missing_classes: tuple[int, ...]  # classes that no scanned image contains
    seed: int
    scanned: int  # how many images were looked at for class coverage
    dataset_size: int
    fingerprint: str = field(default="")  # sha256 over the chosen names; part of the range cache key

    def summary(self) -> dict:
        """The part recorded in a bundle's manifest."""
        return {
            "images": len(self.indices),
            "seed": self.seed,
            "covered_classes": list(self.covered_classes),
            "missing_classes": list(self.missing_classes),
            "scanned_for_coverage": self.scanned,
            "dataset_size": self.dataset_size,
            "set_sha256": self.fingerprint,
        }


def _present_classes(mask: np.ndarray | None, num_classes: int, ignore_index: int) -> frozenset[int]:
    if mask is None:  # an unlabelled image (calibration.folder): nothing to cover
        return frozenset()
    values = np.unique(mask)
    return frozenset(int(v) for v in values if v != ignore_index and 0 <= v < num_classes)


def select_calibration_set(
    dataset: Sequence[LabelledImage],
    count: int,
    num_classes: int,
    ignore_index: int = 255,
    seed: int = 0,
    max_scan: int | None = None,
) -> CalibrationSet:
    """Pick ``count`` images: greedy class cover first, then seeded random fill.

    The greedy step repeatedly takes the image that adds the most classes not yet covered (ties go
    to the earlier image in a seeded shuffle), which covers all classes in few images. Masks are
    read for at most ``max_scan`` images (default ``max(10 * count, 500)``) so that a 100k-image
    dataset does not have to be read in full just to calibrate.
    """
    size = len(dataset)
    if size == 0:
        raise EdgeDeeplabError("the calibration dataset has no images")
    if count < 1:
        raise EdgeDeeplabError(f"--calib-images must be at least 1, got {count}")
    count = min(count, size)
    order = list(range(size))
    random.Random(seed).shuffle(order)
    scan_limit = min(size, max_scan if max_scan is not None else max(10 * count, 500))
    scanned = order[:scan_limit]

    presence: dict[int, frozenset[int]] = {}
    labelled = getattr(dataset[order[0]], "mask", None) is not None
    if not labelled:
        scanned, scan_limit = [], 0  # no masks to read: straight to the seeded random pick
    for index in scanned:
        presence[index] = _present_classes(dataset[index].mask, num_classes, ignore_index)
    available: frozenset[int] = frozenset().union(*presence.values())

    chosen: list[int] = []
    uncovered = set(available)
    while uncovered and len(chosen) < count:
        best = max(scanned, key=lambda i: (len(presence[i] & uncovered) if i not in chosen else -1))
        gain = presence[best] & uncovered
        if not gain:
            break
        chosen.append(best)
        uncovered -= gain
    taken = set(chosen)
    chosen.extend(i for i in order if i not in taken)  # seeded random fill, the shuffle's order
    chosen = chosen[:count]

    covered = frozenset().union(*(presence.get(i, frozenset()) for i in chosen))
    names = tuple(str(dataset[i].name) for i in chosen)
    digest = hashlib.sha256("\n".join(f"{i}:{n}" for i, n in zip(chosen, names)).encode()).hexdigest()
    return CalibrationSet(
        indices=tuple(chosen),
        names=names,
        covered_classes=tuple(sorted(covered)),
        missing_classes=tuple(c for c in range(num_classes) if c not in available) if labelled else (),
        seed=seed,
        scanned=scan_limit,
        dataset_size=size,
        fingerprint=digest,
    )
