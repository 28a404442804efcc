"""What a segmentation dataset is, and how a dataset spec on the command line becomes one.

Every reader (the built-in synthetic set, and the VOC / Cityscapes / folder readers) yields the same
:class:`Sample`: a uint8 HxWx3 RGB image and a uint8 HxW mask of class indices with 255 meaning
"ignore". Keeping readers to plain numpy arrays means evaluation, calibration and reports run on a
device without torch; only :mod:`edge_deeplab.data.torch_dataset` turns samples into tensors.

:func:`open_dataset` walks an explicit registry of ``(detector, constructor)`` pairs, so a new
reader is one :func:`register_reader` call and the order in which readers are tried is visible.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from runtime.errors import EdgeDeeplabError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class Sample:
    """One image with its label mask.

    ``image`` is uint8 HxWx3 RGB, ``mask`` is uint8 HxW class indices (255 = ignore) of the same
    height and width, ``name`` identifies the sample in reports (a file stem, or ``val_0007``).
    """

    image: np.ndarray
    mask: np.ndarray
    name: str


class SegmentationDataset(abc.ABC):
    """A finite, indexable list of :class:`Sample` with class names and a display palette.

    Subclasses set ``name``, ``classes`` and ``palette`` (one RGB triple per class, used to
    colourize masks in previews and bundles) and implement ``__len__`` and ``__getitem__``.
    """

    name: str
    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    def __iter__(self) -> Iterator[Sample]:
        # Explicit, so iteration stops at len() instead of relying on IndexError.
        for i in range(len(self)):
            yield self[i]

    def _check_index(self, index: int) -> int:
        """Normalize a possibly negative index; IndexError outside the dataset."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} samples")
        return index % n


Detector = Callable[[str], bool]
Constructor = Callable[[str, str], SegmentationDataset]

# (detector, constructor) pairs, tried in order by open_dataset(). A detector gets the spec string
# (for on-disk readers: a path) and says whether its constructor should handle it; the constructor
# gets (spec, split). Readers append themselves with register_reader().
READERS: list[tuple[Detector, Constructor]] = []


def register_reader(detector: Detector, constructor: Constructor, first: bool = False) -> None:
    """Add a dataset reader; ``first=True`` puts it ahead of the others (a more specific format)."""
    entry = (detector, constructor)
    if first:
        READERS.insert(0, entry)
    else:
        READERS.append(entry)


def _is_synthetic(spec: str) -> bool:
    return spec == "synthetic" or spec.startswith("synthetic:")


def _open_synthetic(spec: str, split: str) -> SegmentationDataset:
    # Imported here: synthetic.py imports this module for Sample and SegmentationDataset.
    from edge_deeplab.data.synthetic import from_spec

    return from_spec(spec, split)


register_reader(_is_synthetic, _open_synthetic)


def _on_disk_reader(module_name: str) -> tuple[Detector, Constructor]:
    """Detector and constructor of a reader module, imported on first use (they import this one)."""

    def detect(spec: str) -> bool:
        return importlib.import_module(module_name).detect(spec)

    def construct(spec: str, split: str) -> SegmentationDataset:
        return importlib.import_module(module_name).from_path(spec, split)

    return detect, construct


# Published layouts first; the plain folder (images/ + masks/) is the most general, so last.
for _module in ("voc", "cityscapes", "folder"):
    register_reader(*_on_disk_reader(f"edge_deeplab.data.{_module}"))


def open_dataset(spec: str, split: str) -> SegmentationDataset:
    """Turn a command-line dataset spec into a dataset.

    ``spec`` is ``synthetic`` (optionally ``synthetic:seed=3,size=256,n=400``) or a path that
    one of the registered readers recognizes.
    """
    for detector, constructor in READERS:
        if detector(spec):
            return constructor(spec, split)
    if not Path(spec).exists():
        raise EdgeDeeplabError(
            f"dataset {spec!r} does not exist; give a dataset directory or 'synthetic'"
        )
    raise EdgeDeeplabError(
        f"{spec} is not a dataset this version can read; give a dataset directory in a supported "
        "layout or 'synthetic'"
    )


def usual_eval_size(spec: str) -> tuple[int, int] | None:
    """The input size a published dataset is evaluated at (VOC 513x513, Cityscapes 1024x2048).

    What an imported checkpoint, which carries no size of its own, was scored at by its authors;
    ``None`` for datasets without a convention (synthetic, a plain folder).
    """
    from edge_deeplab.data import cityscapes, voc

    if spec == "voc" or voc.detect(spec):
        return voc.EVAL_SIZE
    if spec == "cityscapes" or cityscapes.detect(spec):
        return cityscapes.EVAL_SIZE
    return None
