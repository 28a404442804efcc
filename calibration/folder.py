"""A plain folder of images as an (unlabelled) calibration set.

Calibration needs pixels, not labels: a user with a folder of camera frames and no masks can still
calibrate. Samples have ``mask=None``, so :func:`calibration.selection.select_calibration_set`
falls back to its seeded random pick for them (there is no class coverage to optimize).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import EdgeDeeplabError
from runtime.images import IMAGE_SUFFIXES, list_images, read_image


@dataclass(frozen=True)
class UnlabelledSample:
    image: np.ndarray
    mask: None
    name: str


class ImageFolder:
    """The images directly inside a folder, sorted by name."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise EdgeDeeplabError(f"calibration folder {self.folder} does not exist")
        self.paths = list_images(self.folder)
        if not self.paths:
            raise EdgeDeeplabError(
                f"calibration folder {self.folder} has no usable images ({', '.join(IMAGE_SUFFIXES)})"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> UnlabelledSample:
        path = self.paths[index]
        return UnlabelledSample(read_image(path), None, path.stem)
