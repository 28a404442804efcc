"""The INT8 accuracy guard: keep the most sensitive layers in float until the mIoU drop fits.

Given a ranking of layers (most sensitive first, :mod:`exporters.sensitivity`), the model is
re-quantized with the top 0, 1, 2, 4, 8, ... layers excluded until its mIoU is within
``max_drop_points`` of the FP32 model's on the validation images. Doubling keeps the number of
evaluations logarithmic in the number of layers; each re-quantization reuses the cached ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from exporters.verify import points
from runtime.errors import EdgeDeeplabError


@dataclass
class GuardResult:
    path: Path
    excluded: list[str]
    fp32_miou: float  # fraction in [0, 1]
    int8_miou: float
    steps: list[dict] = field(default_factory=list)

    @property
    def drop_points(self) -> float:
        return points(self.fp32_miou - self.int8_miou)


def exclusion_counts(layers: int) -> list[int]:
    """0, 1, 2, 4, ... and finally all layers."""
    counts, k = [0], 1
    while k < layers:
        counts.append(k)
        k *= 2
    if layers:
        counts.append(layers)
    return counts


def keep_drop_under(
    quantize: Callable[[Sequence[str]], Path],
    score: Callable[[Path], float],
    fp32_miou: float,
    max_drop_points: float,
    ranking: Callable[[Path], list[str]],
    log: Callable[[str], None] = lambda message: None,
) -> GuardResult:
    """Quantize, measure, and exclude more of the ranked layers while the drop is too large.

    ``ranking`` is called once, on the fully quantized model, to get the layer order.
    """
    path = quantize(())
    miou = score(path)
    steps = [{"excluded": 0, "miou": miou, "drop_points": points(fp32_miou - miou)}]
    log(f"    INT8 mIoU {points(miou):.2f} vs FP32 {points(fp32_miou):.2f} (drop {points(fp32_miou - miou):.2f} points)")
    if points(fp32_miou - miou) <= max_drop_points:
        return GuardResult(path, [], fp32_miou, miou, steps)
    order = ranking(path)
    for count in exclusion_counts(len(order))[1:]:
        excluded = order[:count]
        path = quantize(excluded)
        miou = score(path)
        steps.append({"excluded": count, "miou": miou, "drop_points": points(fp32_miou - miou)})
        log(f"    {count} most sensitive layer(s) in float: mIoU {points(miou):.2f} (drop {points(fp32_miou - miou):.2f})")
        if points(fp32_miou - miou) <= max_drop_points:
            return GuardResult(path, list(excluded), fp32_miou, miou, steps)
    best = min(steps, key=lambda s: s["drop_points"])
    raise EdgeDeeplabError(
        f"INT8 drop stays above --max-drop {max_drop_points} points even with {steps[-1]['excluded']} layers in float "
        f"(best: {best['drop_points']:.2f} points with {best['excluded']} excluded); try another --calib-method "
        "or more --calib-images, or a larger --max-drop"
    )
