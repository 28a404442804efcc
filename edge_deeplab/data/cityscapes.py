"""Cityscapes fine annotations, read from the published layout, labels mapped to the 19 train ids.

Layout (``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` unpacked side by side)::

    cityscapes/
      leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
      gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The ``labelIds`` masks hold the 34 full label ids; training and evaluation use the 19 "train ids"
of the Cityscapes benchmark, every other id (void, rare classes, license plates) being ignored.
The mapping and the colours are those of the official ``cityscapesScripts`` label table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_deeplab.data.dataset import IGNORE_INDEX
from edge_deeplab.data.folder import PairedFilesDataset, pair_by_stem
from runtime.errors import EdgeDeeplabError

IMAGE_SUFFIX = "_leftImg8bit.png"
MASK_SUFFIX = "_gtFine_labelIds.png"
# Cityscapes is evaluated at its full resolution.
EVAL_SIZE = (1024, 2048)

# (label id, class name, colour) of the 19 evaluated classes, in train id order.
_TRAIN_LABELS: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
)

CITYSCAPES_CLASSES = [name for _, name, _ in _TRAIN_LABELS]
CITYSCAPES_PALETTE = [colour for _, _, colour in _TRAIN_LABELS]


def label_id_to_train_id() -> np.ndarray:
    """A 256-entry table from label id to train id; every id not evaluated maps to 255 (ignore)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, (label_id, _, _) in enumerate(_TRAIN_LABELS):
        table[label_id] = train_id
    return table


def detect(spec: str) -> bool:
    root = Path(spec)
    return (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir()


def _by_frame(split_dir: Path, suffix: str) -> dict[str, Path]:
    """``<city>_<seq>_<frame>`` -> file, over every city folder of a split."""
    return {p.name[: -len(suffix)]: p for p in split_dir.glob(f"*/*{suffix}")}


def from_path(spec: str, split: str) -> PairedFilesDataset:
    """Open a Cityscapes split; frames with an image but no labelIds mask (or the reverse) are recorded."""
    root = Path(spec)
    image_dir = root / "leftImg8bit" / split
    mask_dir = root / "gtFine" / split
    if not image_dir.is_dir():
        have = sorted(p.name for p in (root / "leftImg8bit").iterdir() if p.is_dir())
        raise EdgeDeeplabError(f"Cityscapes split {split!r} not found in {root / 'leftImg8bit'}; splits: {', '.join(have) or 'none'}")
    images = _by_frame(image_dir, IMAGE_SUFFIX)
    masks = _by_frame(mask_dir, MASK_SUFFIX)
    pairs, problems = pair_by_stem(sorted(set(images) | set(masks)), images, masks, image_dir, mask_dir)
    return PairedFilesDataset(
        name="cityscapes",
        classes=CITYSCAPES_CLASSES,
        palette=CITYSCAPES_PALETTE,
        pairs=pairs,
        layout=f"Cityscapes at {root} (leftImg8bit/{split}, gtFine/{split} labelIds mapped to 19 train ids)",
        problems=problems,
        label_map=label_id_to_train_id(),
    )
