"""PASCAL VOC 2012 segmentation, read from its published layout (and the SBD augmented masks).

Layout (``VOCdevkit/VOC2012`` as unpacked from ``VOCtrainval_11-May-2012.tar``)::

    VOCdevkit/VOC2012/
      ImageSets/Segmentation/train.txt, val.txt, trainval.txt   stems, one a line
      JPEGImages/<stem>.jpg
      SegmentationClass/<stem>.png      palette PNGs: index = class, 255 = object borders (ignore)
      SegmentationClassAug/<stem>.png   optional: SBD augmented masks (grayscale indices)

The dataset path may be the directory holding ``VOCdevkit``, ``VOCdevkit`` itself, or ``VOC2012``.
Splits are the list files in ``ImageSets/Segmentation`` (masks from ``SegmentationClass``) and
``train_aug``, the 10,582-image training set of the DeepLab papers: masks from
``SegmentationClassAug``, stems from ``ImageSets/Segmentation/train_aug.txt`` when present, else every
``SegmentationClassAug`` mask whose stem is not in ``val.txt`` (so val images never leak into training).
"""

from __future__ import annotations

from pathlib import Path

from edge_deeplab.data.folder import PairedFilesDataset, pair_by_stem, read_list_file
from edge_deeplab.data.palette import voc_colormap
from runtime.errors import EdgeDeeplabError

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]

AUG_SPLIT = "train_aug"
# The input size DeepLab evaluates VOC at (every VOC image is at most 500x500, padded to 513x513).
EVAL_SIZE = (513, 513)

VOC_PALETTE = voc_colormap(len(VOC_CLASSES))


def find_root(path: Path) -> Path | None:
    """The ``VOC2012`` directory for ``path`` (it, its ``VOC2012`` child, or ``VOCdevkit/VOC2012``)."""
    for candidate in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    return None


def detect(spec: str) -> bool:
    return find_root(Path(spec)) is not None


def _stems(masks_dir: Path) -> dict[str, Path]:
    return {p.stem: p for p in masks_dir.glob("*.png")}


def from_path(spec: str, split: str) -> PairedFilesDataset:
    """Open a VOC 2012 split; a stem whose JPEG or mask is missing is left out and recorded."""
    root = find_root(Path(spec))
    if root is None:
        raise EdgeDeeplabError(f"{spec} is not a PASCAL VOC 2012 directory (no JPEGImages and ImageSets/Segmentation)")
    lists = root / "ImageSets" / "Segmentation"
    if split == AUG_SPLIT:
        mask_dir = root / "SegmentationClassAug"
        if not mask_dir.is_dir():
            raise EdgeDeeplabError(
                f"split {AUG_SPLIT} needs the SBD augmented masks in {mask_dir} (SegmentationClassAug), "
                "which is not there"
            )
        masks = _stems(mask_dir)
        if (lists / f"{AUG_SPLIT}.txt").is_file():
            stems = read_list_file(lists / f"{AUG_SPLIT}.txt")
            source = f"{AUG_SPLIT}.txt"
        else:
            if not (lists / "val.txt").is_file():
                raise EdgeDeeplabError(f"{lists} has no val.txt, needed to keep val images out of {AUG_SPLIT}")
            val = set(read_list_file(lists / "val.txt"))
            stems = sorted(set(masks) - val)
            source = "SegmentationClassAug minus val.txt"
    else:
        list_file = lists / f"{split}.txt"
        if not list_file.is_file():
            have = sorted(p.stem for p in lists.glob("*.txt"))
            if (root / "SegmentationClassAug").is_dir():
                have.append(AUG_SPLIT)
            raise EdgeDeeplabError(f"VOC split {split!r} not found in {lists}; splits: {', '.join(have)}")
        mask_dir = root / "SegmentationClass"
        stems = read_list_file(list_file)
        masks = _stems(mask_dir)
        source = list_file.name
    images = {stem: root / "JPEGImages" / f"{stem}.jpg" for stem in stems}
    images = {stem: path for stem, path in images.items() if path.is_file()}
    pairs, problems = pair_by_stem(stems, images, masks, root / "JPEGImages", mask_dir)
    return PairedFilesDataset(
        name="voc",
        classes=VOC_CLASSES,
        palette=VOC_PALETTE,
        pairs=pairs,
        layout=f"PASCAL VOC 2012 at {root} (stems from {source}, masks from {mask_dir.name})",
        problems=problems,
        mask_palette=VOC_PALETTE,
    )
