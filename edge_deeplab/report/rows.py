"""What a report holds: its rows (:class:`Row`), the :class:`Report` itself, and the figures
derived across rows (each row's FP32 reference and mIoU delta, the Pareto front).

The data types live here, below both the code that fills them (measuring, exporting) and the code
that draws and writes them (:mod:`edge_deeplab.report.render`, :mod:`edge_deeplab.plots`), so
neither has to import the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from edge_deeplab.report.machine import machine_info, package_versions
from edge_deeplab.report.plan import Combination
from runtime.manifest import TARGET_BACKEND


@dataclass
class Row:
    """One combination's measured figures (``status`` "measured") or why it has none ("skipped")."""

    name: str
    output_stride: int | None
    target: str
    precision: str
    model: str = ""
    qat: bool = False  # an INT8 bundle fine-tuned with quantization in the loop (else PTQ)
    status: str = "measured"
    reason: str = ""
    bundle: str | None = None
    input_size: list[int | None] | None = None
    images: int = 0
    miou: float | None = None
    pixel_accuracy: float | None = None
    boundary_miou: dict[int, float | None] = field(default_factory=dict)
    per_class_iou: dict[str, float | None] = field(default_factory=dict)
    latency: dict[str, Any] | None = None  # runtime.benchmark.LatencyStats.to_dict()
    size_mb: float | None = None
    delta_points: float | None = None
    reference: str | None = None
    pareto: bool = False

    @property
    def measured(self) -> bool:
        return self.status == "measured"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["boundary_miou"] = {str(k): v for k, v in self.boundary_miou.items()}
        return data


def skipped_row(combo: Combination, reason: str, bundle: str | None = None) -> Row:
    return Row(combo.name, combo.output_stride, combo.target, combo.precision, combo.model, combo.qat, "skipped",
               reason, bundle)


def assign_references(rows: Sequence[Row]) -> None:
    """Set each measured row's mIoU delta (points) against its FP32 reference.

    The reference is the FP32 row of the same model and output stride on the same runtime (ONNX Runtime for
    ``onnx`` and ``onnxruntime``, OpenVINO, TensorRT), so a delta shows what the precision costs and
    not what one runtime's kernels differ from another's; when that runtime has no FP32 row, the
    ``onnx`` FP32 row (the exported graph itself), else any FP32 row of that stride.
    """
    fp32 = [r for r in rows if r.measured and r.precision == "fp32" and r.miou is not None]
    for row in rows:
        if not row.measured or row.miou is None:
            continue
        same_stride = [r for r in fp32 if r.output_stride == row.output_stride and r.model == row.model]
        same_runtime = [r for r in same_stride if TARGET_BACKEND[r.target] == TARGET_BACKEND[row.target]]
        onnx = [r for r in same_stride if r.target == "onnx"]
        candidates = same_runtime or onnx or same_stride
        if not candidates:
            row.reference, row.delta_points = None, None
            continue
        reference = next((r for r in candidates if r.target == row.target), candidates[0])
        row.reference = reference.name
        row.delta_points = 100.0 * (row.miou - reference.miou)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point beats: faster-or-equal and
    at-least-as-accurate with one of the two strictly better. Sorted by latency."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any(
            (l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def mark_pareto(rows: Sequence[Row]) -> None:
    measured = [r for r in rows if r.measured and r.latency and r.miou is not None]
    for index in pareto_front([(r.latency["p50_ms"], r.miou) for r in measured]):
        measured[index].pareto = True


REFERENCE_RULE = ("mIoU delta in points against the FP32 row of the same model and output stride on the same runtime "
                  "(ONNX Runtime for onnx/onnxruntime rows, OpenVINO, TensorRT), or else the onnx FP32 row of "
                  "that stride; column 'vs' names it")


@dataclass
class Report:
    """Everything the files say: provenance, settings, machine and the rows."""

    title: str
    source: dict[str, Any]
    settings: dict[str, Any]
    rows: list[Row]
    headline_width: int
    machine: dict[str, Any] = field(default_factory=machine_info)
    versions: dict[str, str] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def measured(self) -> list[Row]:
        return [r for r in self.rows if r.measured]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "title": self.title,
            "created": self.created,
            "source": self.source,
            "settings": self.settings,
            "machine": self.machine,
            "versions": self.versions,
            "reference": REFERENCE_RULE,
            "headline_band_width": self.headline_width,
            "rows": [r.to_dict() for r in self.rows],
        }
