"""What every dataset reader yields: :class:`Sample` and :class:`SegmentationDataset`.

A module of its own so that the readers (synthetic, VOC, Cityscapes, folder) and the registry that
opens them (:mod:`edge_deeplab.data.base`) all import these types from one place below them, and
no reader has to import the registry that imports it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterator

import numpy as np

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
