"""Export helpers shared by ``edge-deeplab export`` and the report: the request's checks, the
calibration and validation datasets, the default input size, the checkpoint's own score and what
a manifest records of the model and its checkpoint.

Torch-free at import; :func:`checkpoint_miou` runs the PyTorch model it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from runtime.errors import EdgeDeeplabError

# The largest input an export accepts: 8192 px a side and 4096x8192 in all, twice a full
# Cityscapes frame each way. Checked before anything is allocated: a typo such as 100000x100000
# would otherwise ask torch for 120 GB for the first tensor.
MAX_INPUT_SIDE = 8192
MAX_INPUT_PIXELS = 4096 * 8192


def check_input_size_limit(height: int, width: int) -> None:
    """Refuse an input size no device could run, in one line, before any work."""
    if max(height, width) > MAX_INPUT_SIDE or height * width > MAX_INPUT_PIXELS:
        raise EdgeDeeplabError(
            f"input size {height}x{width} is too large: at most {MAX_INPUT_SIDE} pixels a side and "
            "4096x8192 pixels in all"
        )


def open_calibration(spec: str):
    """A dataset spec (train split) or, failing that, a folder of unlabelled images."""
    from calibration.folder import ImageFolder
    from edge_deeplab.data.base import open_dataset

    try:
        dataset = open_dataset(spec, "train")
    except EdgeDeeplabError:
        if Path(spec).is_dir():
            return ImageFolder(spec)  # raises "no usable images" for an empty folder
        raise
    if len(dataset) == 0:
        raise EdgeDeeplabError(f"calibration dataset {spec} has no usable images")
    return dataset


def check_classes(dataset, spec: str, classes: Sequence[str]) -> None:
    names = getattr(dataset, "classes", None)
    if names is not None and list(names) != list(classes):
        raise EdgeDeeplabError(
            f"dataset {spec} has classes {list(names)[:8]}{'...' if len(names) > 8 else ''} but the checkpoint "
            f"was trained on {list(classes)[:8]}{'...' if len(classes) > 8 else ''}"
        )


def open_if_readable(spec: str):
    """The validation split of ``spec`` when this machine can open it, else None (e.g. the 'voc'
    an imported checkpoint records, on a machine without VOC)."""
    from edge_deeplab.data.base import open_dataset

    if not spec:
        return None
    try:
        return open_dataset(spec, "val")
    except EdgeDeeplabError:
        return None


def sample_images(count: int) -> list:
    """The built-in sample images (the synthetic set's first validation images): what an export is
    verified against PyTorch on when no image of the checkpoint's own data is on this machine.
    Verification compares the bundle with PyTorch pixel by pixel, so any real-looking picture serves;
    labels are not needed."""
    from edge_deeplab.data.base import open_dataset

    samples = open_dataset("synthetic", "val")
    return [samples[i] for i in range(min(count, len(samples)))]


def default_input_size(ckpt, validation) -> tuple[tuple[int, int], str]:
    """The bundle's input size when none is given, and why: the size the checkpoint's mIoU was
    measured at, so that the bundle sees images as the checkpoint did (whole, not shrunk or padded)."""
    from edge_deeplab.data.base import usual_eval_size

    if ckpt.eval_input_size:
        h, w = ckpt.eval_input_size
        if "imported_from" in ckpt.metrics:  # recorded at import from the dataset's convention, not measured
            return (h, w), (f"the usual evaluation size of {ckpt.dataset or 'its dataset'}, recorded at import "
                            "(this checkpoint was not evaluated here)")
        return (h, w), "the size the checkpoint was evaluated at"
    usual = usual_eval_size(ckpt.dataset) if ckpt.dataset else None
    if usual:
        return usual, f"the usual evaluation size of {ckpt.dataset}"
    if validation is not None:
        sizes = [validation.dataset[i].image.shape[:2] for i in validation.indices]
        return (max(s[0] for s in sizes), max(s[1] for s in sizes)), "the largest of the validation images"
    raise EdgeDeeplabError("the checkpoint records no evaluation size and no validation images are readable; "
                           "give --input-size HxW")


def checkpoint_miou(model, validation) -> float:
    """The checkpoint's mIoU on the validation images, each at its native size (PyTorch, no resize).

    The validation indices are the dataset's first N (build_request picks them so), which is what
    ``score_predictions``' ``limit`` scores.
    """
    from edge_deeplab.evaluate import score_predictions, torch_predictor

    summary = score_predictions(torch_predictor(model), validation.dataset, limit=len(validation.indices),
                                band_widths=(), desc="scoring the checkpoint")
    return float(summary["miou"])


def model_record(config, output_stride: int) -> dict:
    """What a bundle's manifest records of the model (``config`` a ModelConfig) at ``output_stride``."""
    return {"backbone": config.backbone, "output_stride": output_stride, "decoder": config.decoder,
            "separable": config.use_separable, "width_mult": config.width_mult,
            "config": {**config.to_dict(), "output_stride": output_stride}}


def source_record(path: str | Path, ckpt) -> dict:
    """What a bundle's manifest records of the checkpoint it came from (path, hash, dataset, metrics)."""
    from runtime.files import sha256_file

    return {"checkpoint": str(Path(path).resolve()), "sha256": sha256_file(path),
            "dataset": ckpt.dataset, "metrics": ckpt.metrics}
