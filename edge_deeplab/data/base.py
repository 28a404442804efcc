"""What a segmentation dataset is, and how a dataset spec on the command line becomes one.

Every reader (the built-in synthetic set, and the VOC / Cityscapes / folder readers) yields the same
:class:`Sample`: a uint8 HxWx3 RGB image and a uint8 HxW mask of class indices with 255 meaning
"ignore". Keeping readers to plain numpy arrays means evaluation, calibration and reports run on a
device without torch; only :mod:`edge_deeplab.data.torch_dataset` turns samples into tensors.

:func:`open_dataset` walks an explicit registry of ``(detector, constructor)`` pairs, so a new
reader is one :func:`register_reader` call and the order in which readers are tried is visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edge_deeplab.data import cityscapes, folder, synthetic, voc
from edge_deeplab.data.dataset import IGNORE_INDEX, Sample, SegmentationDataset
from runtime.errors import EdgeDeeplabError

__all__ = ["IGNORE_INDEX", "READERS", "Sample", "SegmentationDataset", "open_dataset", "open_scoring_data",
           "register_reader", "usual_eval_size"]

Detector = Callable[[str], bool]
Constructor = Callable[[str, str], SegmentationDataset]

# (detector, constructor) pairs, tried in order by open_dataset(). A detector gets the spec string
# (for on-disk readers: a path) and says whether its constructor should handle it; the constructor
# gets (spec, split). The built-in readers are registered below; register_reader() adds others.
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


register_reader(_is_synthetic, synthetic.from_spec)
# The published datasets a checkpoint may record by name ('voc' from an import), and where a copy is.
_PUBLISHED = {"voc": "the PASCAL VOC 2012 folder with JPEGImages/ and SegmentationClass/",
              "cityscapes": "the Cityscapes folder with leftImg8bit/ and gtFine/"}
# Published layouts first; the plain folder (images/ + masks/) is the most general, so last.
for _reader in (voc, cityscapes, folder):
    register_reader(_reader.detect, _reader.from_path)


def open_dataset(spec: str, split: str) -> SegmentationDataset:
    """Turn a command-line dataset spec into a dataset.

    ``spec`` is ``synthetic`` (optionally ``synthetic:seed=3,size=256,n=400``) or a path that
    one of the registered readers recognizes.
    """
    for detector, constructor in READERS:
        if detector(spec):
            return constructor(spec, split)
    if spec in _PUBLISHED and not Path(spec).exists():
        raise EdgeDeeplabError(f"{spec!r} names a dataset, not a folder here: give the path of your copy of it "
                               f"({_PUBLISHED[spec]})")
    if not Path(spec).exists():
        raise EdgeDeeplabError(
            f"dataset {spec!r} does not exist; give a dataset directory or 'synthetic'"
        )
    raise EdgeDeeplabError(
        f"{spec} is not a dataset this version can read; give a dataset directory in a supported "
        "layout or 'synthetic'"
    )


def open_scoring_data(spec: str, split: str, classes: list[str], recorded: bool) -> SegmentationDataset:
    """The labelled dataset a model of ``classes`` is scored on, or one line saying what can work.

    ``recorded``: ``spec`` is the dataset the checkpoint or bundle records, not one the user gave;
    an imported checkpoint records 'voc' on a machine without VOC, and the way forward is a copy of
    that data or any labelled folder with the same classes ('synthetic' has other classes).
    """
    try:
        dataset = open_dataset(spec, split)
    except EdgeDeeplabError as exc:
        if not recorded:
            raise
        why = "is not on this machine" if not Path(spec).exists() else f"is not readable here ({str(exc).rstrip('.')})"
        raise EdgeDeeplabError(
            f"the model's dataset {spec} {why}; give --data: the path of your copy of {spec}, or a folder with "
            f"images/, masks/ and a classes.yaml of its {len(classes)} classes "
            f"({', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''})") from None
    if list(dataset.classes) != list(classes):
        raise EdgeDeeplabError(
            f"dataset {spec} has {len(dataset.classes)} classes ({', '.join(list(dataset.classes)[:4])}...), the "
            f"model {len(classes)} ({', '.join(list(classes)[:4])}...); give a dataset with the model's classes")
    return dataset


def usual_eval_size(spec: str) -> tuple[int, int] | None:
    """The input size a published dataset is evaluated at (VOC 513x513, Cityscapes 1024x2048).

    What an imported checkpoint, which carries no size of its own, was scored at by its authors;
    ``None`` for datasets without a convention (synthetic, a plain folder).
    """
    if spec == "voc" or voc.detect(spec):
        return voc.EVAL_SIZE
    if spec == "cityscapes" or cityscapes.detect(spec):
        return cityscapes.EVAL_SIZE
    return None
