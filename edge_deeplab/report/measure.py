"""Measuring bundles: every one scored through the runtime, then all timed together, interleaved.

Each bundle is scored with ``runtime.load`` + :func:`score_predictions` (the code path a device
runs) on the same decoded images (:class:`SampleList`), and timed with
:func:`runtime.benchmark.compare`, all bundles interleaved round-robin so that machine noise lands
on every row alike. Torch-free: a Jetson measures what was exported elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from edge_deeplab.report.plan import Combination, runtime_unavailable
from edge_deeplab.report.rows import Row, assign_references, mark_pareto, skipped_row
from runtime.errors import EdgeDeeplabError
from runtime.manifest import Manifest

# Manifest file roles that are documentation or caches rather than the model itself.
_NOT_MODEL_ROLES = {"readme", "timing_cache"}


def bundle_size_mb(bundle_dir: Path, manifest: Manifest) -> float:
    """Megabytes (10^6 bytes) of the model files: what has to fit on the device, not the README."""
    total = sum((bundle_dir / name).stat().st_size for role, name in manifest.files.items()
                if role not in _NOT_MODEL_ROLES)
    return total / 1e6


class SampleList:
    """Validation samples read once and kept in memory, shaped like a dataset for scoring.

    Every row is scored on the very same decoded images, and slow readers (JPEG decoding, the
    synthetic generator) run once instead of once per combination.
    """

    def __init__(self, dataset, limit: int | None) -> None:
        count = len(dataset) if limit is None else min(limit, len(dataset))
        if count == 0:
            raise EdgeDeeplabError("the dataset has no images to score")
        self.classes = list(dataset.classes)
        self.ignore_index = dataset.ignore_index
        self.name = getattr(dataset, "name", "")
        self.samples = [dataset[i] for i in range(count)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]

    def largest_size(self) -> tuple[int, int]:
        """The height and width that hold every image without shrinking."""
        return (max(s.image.shape[0] for s in self.samples), max(s.image.shape[1] for s in self.samples))


@dataclass
class TimingSettings:
    runs: int = 50
    warmup: int = 5
    threads: int = 0


@dataclass
class Measurement:
    """What every report measures with: the scored images, the band widths and the timing."""

    samples: SampleList
    data: str
    split: str
    band_widths: tuple[int, ...]
    headline_width: int
    timing: TimingSettings
    verbose: bool = False

    def settings(self, input_size: str, export: str | None = None) -> dict[str, Any]:
        t = self.timing
        timing = (f"Segmenter.predict on one image (pre- and post-processing included), {t.warmup} warm-up + "
                  f"{t.runs} timed runs per bundle, bundles interleaved round-robin, cycling through the "
                  f"{len(self.samples)} scored images; threads: {t.threads or 'backend default'}")
        settings = {"data": self.data, "split": self.split, "images": len(self.samples), "input_size": input_size,
                    "band_widths": list(self.band_widths), "runs": t.runs, "warmup": t.warmup,
                    "threads": t.threads, "timing": timing}
        if export:
            settings["export"] = export
        return settings


def measure_bundles(
    bundles: Sequence[tuple[Combination, Path]],
    samples: SampleList,
    band_widths: Sequence[int],
    timing: TimingSettings,
    step: Callable[[str], None] = lambda message: None,
    unrunnable_note: str = "",
) -> list[Row]:
    """Score every bundle through the runtime, then time them all together, interleaved.

    A bundle this machine cannot run (its backend is not installed, its classes differ from the
    dataset's, it fails to load) becomes a skipped row with the reason; the others are measured.
    ``step`` is called once per bundle scored and once for the timing (for a progress bar);
    ``unrunnable_note`` is added to the reason of a bundle whose backend is not installed here.
    """
    import runtime
    from edge_deeplab.evaluate import score_predictions
    from runtime.benchmark import compare
    from runtime.manifest import read_manifest

    rows: dict[str, Row] = {}
    loaded: dict[str, Any] = {}
    try:
        for combo, path in bundles:
            step(f"score {combo.name}")
            reason = runtime_unavailable(combo.target)
            if reason:
                rows[combo.name] = skipped_row(combo, reason + unrunnable_note, str(path))
                continue
            try:
                manifest = read_manifest(path, verify_files=False)  # runtime.load verifies the files
                if list(manifest.classes) != samples.classes:
                    raise EdgeDeeplabError(
                        f"its {len(manifest.classes)} classes are not the dataset's {len(samples.classes)} "
                        f"({', '.join(samples.classes[:4])}...)")
                segmenter = runtime.load(path, threads=timing.threads)
            except EdgeDeeplabError as exc:
                rows[combo.name] = skipped_row(combo, f"cannot load: {exc}", str(path))
                continue
            try:
                summary = score_predictions(segmenter.predict, samples, None, band_widths, progress=False)
            except EdgeDeeplabError as exc:  # e.g. a model whose output the runtime cannot use
                segmenter.close()
                rows[combo.name] = skipped_row(combo, f"cannot run: {exc}", str(path))
                continue
            loaded[combo.name] = segmenter
            rows[combo.name] = Row(
                combo.name, combo.output_stride, combo.target, combo.precision, combo.model, combo.qat,
                bundle=str(path),
                input_size=list(manifest.input.shape[2:]), images=summary["images"], miou=summary["miou"],
                pixel_accuracy=summary["pixel_accuracy"], boundary_miou=dict(summary["boundary_miou"]),
                per_class_iou=dict(summary["per_class_iou"]), size_mb=bundle_size_mb(path, manifest),
            )
        step(f"timing {len(loaded)} bundles interleaved")
        if loaded:
            stats = compare(loaded, [s.image for s in samples.samples], runs=timing.runs, warmup=timing.warmup)
            for s in stats:
                rows[s.name].latency = s.to_dict()
    finally:
        for segmenter in loaded.values():
            segmenter.close()
    ordered = [rows[combo.name] for combo, _ in bundles]
    assign_references(ordered)
    mark_pareto(ordered)
    return ordered
