"""Why a bundle may score below its checkpoint, and the flag that changes it."""

from __future__ import annotations

from typing import Sequence

from runtime.preprocess import Placement

# A bundle scoring this many mIoU points below its checkpoint (at the checkpoint's native size)
# gets a warning naming the likely cause: more than INT8 or FP16 costs, so the input size is off.
WARN_DROP_POINTS = 1.0


def size_advice(placements: Sequence[Placement], height: int, width: int) -> str:
    """The likely cause of a bundle losing mIoU to its checkpoint, and the flag that changes it."""
    shrunk = sum(p.scaled_h < p.orig_h or p.scaled_w < p.orig_w for p in placements)
    padded = sum(p.scaled_h < p.input_h or p.scaled_w < p.input_w for p in placements)
    largest = (max(p.orig_h for p in placements), max(p.orig_w for p in placements))
    fix = f"export with --input-size {largest[0]}x{largest[1]} (the largest validation image) or --dynamic"
    if shrunk:
        return (f"{shrunk} of {len(placements)} images are larger than the {height}x{width} input and were shrunk "
                f"to fit (then padded): {fix}")
    if padded:
        return (f"{padded} of {len(placements)} images are smaller than the {height}x{width} input and run padded, "
                f"which the model never saw in training: {fix}")
    return "the images fill the input exactly, so the loss comes from the precision: try --max-drop"
