"""The accuracy-versus-latency report: every (model, output stride, target, precision), measured.

Each row is a bundle scored through the runtime (``runtime.load`` + :func:`score_predictions`, the
code path a device runs) and timed with :func:`runtime.benchmark.compare`, all bundles interleaved
round-robin so that machine noise lands on every row alike. Nothing is copied from a manifest or an
earlier run: every figure in the files is measured by the run that writes them, on the machine the
header names.

Several checkpoints (the dense and the separable head, say) go into one table and one plot, their
bundles timed in the same interleaved round, with a ``model`` column naming each by what differs.

Two ways in: :func:`report_from_checkpoint` exports one bundle per combination first (torch,
imported lazily, by :func:`export_bundles`), :func:`report_from_bundles` measures bundles already
on disk (torch-free, so a Jetson reports on what was exported elsewhere). Both write
``report.md``, ``report.csv``, ``report.json`` and the plots into one folder, atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata, util
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_write_text
from runtime.manifest import MANIFEST_NAME, TARGET_BACKEND, TARGET_PRECISIONS, TARGETS, PRECISIONS, Manifest

OUTPUT_STRIDES = (8, 16, 32)
# What each backend needs importable here (TensorRT also needs cuda-python to run anything).
_BACKEND_MODULES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "tensorrt": ("tensorrt", "cuda")}
# Manifest file roles that are documentation or caches rather than the model itself.
_NOT_MODEL_ROLES = {"readme", "timing_cache"}
VERSION_PACKAGES = ("numpy", "onnxruntime", "openvino", "nncf", "onnx", "torch", "tensorrt", "opencv-python",
                    "opencv-python-headless", "edge-deeplab")


@dataclass(frozen=True)
class Combination:
    """One report row's identity: the output stride the model runs at, the target and the precision."""

    output_stride: int
    target: str
    precision: str
    label: str = ""  # shown instead of the generated name (two bundles of one combination)
    model: str = ""  # which checkpoint, when a report compares several (see model_labels)

    @property
    def name(self) -> str:
        prefix = f"{slug(self.model)}-" if self.model else ""
        return self.label or f"{prefix}os{self.output_stride}-{self.target}-{self.precision}"


def slug(text: str) -> str:
    """``mobilenetv2 separable`` -> ``mobilenetv2-separable``: a model label as a folder-name part."""
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def plan_combinations(strides: Iterable[int], targets: Iterable[str], precisions: Iterable[str]) -> list[Combination]:
    """Every valid (stride, target, precision), in table order.

    Pairs the design's target table does not offer (``onnx`` int8: that is the ``onnxruntime``
    target; ``onnxruntime`` fp32) are left out, so ``--targets onnx,onnxruntime --precisions
    fp32,int8`` means what a user expects.
    """
    strides, targets, precisions = list(strides), list(targets), list(precisions)
    for stride in strides:
        if stride not in OUTPUT_STRIDES:
            raise EdgeDeeplabError(f"output stride must be 8, 16 or 32, not {stride}")
    for target in targets:
        if target not in TARGETS:
            raise EdgeDeeplabError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    for precision in precisions:
        if precision not in PRECISIONS:
            raise EdgeDeeplabError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    combos = [
        Combination(s, t, p)
        for s in sorted(set(strides))
        for t in TARGETS if t in targets
        for p in PRECISIONS if p in precisions and p in TARGET_PRECISIONS[t]
    ]
    if not combos:
        raise EdgeDeeplabError(
            f"no target offers the precisions {', '.join(precisions)}: "
            + "; ".join(f"{t}: {', '.join(TARGET_PRECISIONS[t])}" for t in targets)
        )
    return combos


def runtime_unavailable(target: str) -> str | None:
    """Why bundles of ``target`` cannot be run on this machine, or None when they can."""
    backend = TARGET_BACKEND[target]
    missing = [m for m in _BACKEND_MODULES[backend] if util.find_spec(m) is None]
    if not missing:
        return None
    if backend == "tensorrt":
        return "TensorRT is not importable here (it runs on the Jetson: pip install 'edge-deeplab[tensorrt]' there)"
    return f"{missing[0]} is not installed here (pip install 'edge-deeplab[{backend}]')"


# -- rows ----------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One combination's measured figures (``status`` "measured") or why it has none ("skipped")."""

    name: str
    output_stride: int | None
    target: str
    precision: str
    model: str = ""
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
    return Row(combo.name, combo.output_stride, combo.target, combo.precision, combo.model, "skipped", reason, bundle)


def bundle_size_mb(bundle_dir: Path, manifest: Manifest) -> float:
    """Megabytes (10^6 bytes) of the model files: what has to fit on the device, not the README."""
    total = sum((bundle_dir / name).stat().st_size for role, name in manifest.files.items()
                if role not in _NOT_MODEL_ROLES)
    return total / 1e6


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


# -- the machine -----------------------------------------------------------------------------------------

def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, OS and (on a Jetson) the board: what the latencies belong to."""
    cpu = ""
    for line in _read_text("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware")):
            cpu = line.split(":", 1)[1].strip()
            break
    info: dict[str, Any] = {
        "cpu": cpu or platform.processor() or platform.machine(),
        "architecture": platform.machine(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cores_usable"] = len(os.sched_getaffinity(0))
    for line in _read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            info["memory_gb"] = round(int(line.split()[1]) / 1024**2, 1)
    board = _read_text("/proc/device-tree/model").strip("\x00\n ")
    if board:
        info["board"] = board
    return info


def package_versions() -> dict[str, str]:
    """Installed versions, read from package metadata (importing torch just to ask would be slow
    and, on a device, impossible)."""
    versions = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# -- measuring -------------------------------------------------------------------------------------------

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
                combo.name, combo.output_stride, combo.target, combo.precision, combo.model, bundle=str(path),
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


def find_bundles(folder: Path) -> list[tuple[Combination, Path]]:
    """Every bundle in ``folder`` (its subfolders with a model.json, or the folder itself), named by
    folder and sorted in table order."""
    from runtime.manifest import read_manifest

    if not folder.is_dir():
        raise EdgeDeeplabError(f"--bundles {folder} is not a directory")
    candidates = [folder] if (folder / MANIFEST_NAME).is_file() else sorted(
        p for p in folder.iterdir() if (p / MANIFEST_NAME).is_file())
    if not candidates:
        raise EdgeDeeplabError(f"{folder} holds no bundle (no subfolder with a {MANIFEST_NAME})")
    found = []
    for path in candidates:
        manifest = read_manifest(path, verify_files=False)  # runtime.load verifies the checksums
        stride = manifest.model.get("output_stride")
        found.append((Combination(int(stride) if stride else 0, manifest.target, manifest.precision), path))
    order = {(t, p): i for i, (t, p) in enumerate((t, p) for t in TARGETS for p in PRECISIONS)}
    found.sort(key=lambda item: (item[0].output_stride, order[(item[0].target, item[0].precision)], item[1].name))
    names: dict[str, int] = {}
    for combo, path in found:
        names[combo.name] = names.get(combo.name, 0) + 1
    # Two bundles of the same combination keep their folder names, so neither row hides the other.
    return [(combo if names[combo.name] == 1 else replace(combo, label=path.name), path) for combo, path in found]


# -- exporting (checkpoint -> bundles; needs torch) --------------------------------------------------------

@dataclass
class ExportSettings:
    """How the report's bundles are exported (one static input size for all, the calibration set)."""

    height: int
    width: int
    calib_data: str
    calib_images: int = 100
    calib_method: str = "minmax"
    calib_seed: int = 0
    max_drop: float | None = None


def export_bundles(
    ckpt,
    combos: Sequence[Combination],
    dest: Path,
    settings: ExportSettings,
    verify_samples: Sequence,
    log: Callable[[str], None],
    step: Callable[[str], None] = lambda message: None,
) -> tuple[list[tuple[Combination, Path]], list[Row]]:
    """Export each combination of ``ckpt`` (a loaded Checkpoint) into ``dest/<name>``.

    Returns the bundles written and the rows skipped.

    The model is built once per output stride and the calibration set chosen once, so every INT8
    bundle is calibrated on the same images. A combination this machine cannot build (OpenVINO not
    installed) or whose export fails its own checks is skipped with the reason.
    """
    from edge_deeplab.metrics import miou_function
    from exporters.bundle import ExportRequest, ValidationInput, export_bundle
    from runtime.files import sha256_file

    checkpoint_path = Path(ckpt.path)
    calibration = None
    if any(c.precision == "int8" for c in combos):
        calibration = _calibration_input(settings, ckpt, log)
    validation = None
    if settings.max_drop is not None:
        validation = ValidationInput(verify_samples, list(range(len(verify_samples))), "report validation images",
                                     miou_function(ckpt.num_classes, ckpt.ignore_index))
    source = {"checkpoint": str(checkpoint_path.resolve()), "sha256": sha256_file(checkpoint_path),
              "dataset": ckpt.dataset, "metrics": ckpt.metrics}
    config = ckpt.model_config
    written: list[tuple[Combination, Path]] = []
    skipped: list[Row] = []
    models: dict[int, Any] = {}
    for combo in combos:
        step(f"export {combo.name}")
        reason = _export_unavailable(combo)
        if reason:
            skipped.append(skipped_row(combo, reason))
            continue
        if combo.output_stride not in models:
            models = {combo.output_stride: ckpt.build_model(combo.output_stride)}  # one stride in memory at a time
        out = dest / combo.name
        log(f"== {combo.name}")
        request = ExportRequest(
            model=models[combo.output_stride], target=combo.target, precision=combo.precision, out=out,
            height=settings.height, width=settings.width, classes=list(ckpt.classes),
            palette=[list(c) for c in ckpt.palette], mean=list(ckpt.mean), std=list(ckpt.std),
            verify_samples=list(verify_samples[:4]), ignore_index=ckpt.ignore_index,
            model_info={"backbone": config.backbone, "output_stride": combo.output_stride, "decoder": config.decoder,
                        "separable": config.use_separable, "width_mult": config.width_mult,
                        "config": {**config.to_dict(), "output_stride": combo.output_stride}},
            source=source, calibration=calibration if combo.precision == "int8" else None,
            validation=validation if combo.precision == "int8" else None,
            max_drop=settings.max_drop if combo.precision == "int8" else None, log=log,
        )
        try:
            export_bundle(request)
        except EdgeDeeplabError as exc:
            log(f"   export failed: {exc}")
            skipped.append(skipped_row(combo, f"export failed: {exc}"))
            continue
        written.append((combo, out))
    return written, skipped


def _export_unavailable(combo: Combination) -> str | None:
    if combo.target == "openvino":
        if util.find_spec("openvino") is None:
            return "cannot export: openvino is not installed here (pip install 'edge-deeplab[openvino]')"
        if combo.precision == "int8" and util.find_spec("nncf") is None:
            return "cannot export: nncf is not installed here (pip install 'edge-deeplab[openvino]')"
    return None


def _calibration_input(settings: ExportSettings, ckpt, log: Callable[[str], None]):
    """The calibration set: a dataset spec (train split) or a folder of plain images."""
    from calibration.selection import select_calibration_set
    from edge_deeplab.export import check_classes, open_calibration
    from exporters.bundle import CalibrationInput

    dataset = open_calibration(settings.calib_data)
    check_classes(dataset, settings.calib_data, ckpt.classes)
    log(f"choosing {settings.calib_images} calibration images from {settings.calib_data}")
    chosen = select_calibration_set(dataset, settings.calib_images, ckpt.num_classes, ckpt.ignore_index,
                                    seed=settings.calib_seed)
    return CalibrationInput(dataset, chosen, settings.calib_data, settings.calib_method)


# -- the report ------------------------------------------------------------------------------------------

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


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _delta(row: Row) -> str:
    if row.delta_points is None:
        return "n/a"
    return "ref" if row.reference == row.name else f"{row.delta_points:+.2f}"


def main_table(report: Report) -> str:
    """The headline Markdown table (measured rows; Pareto-optimal rows marked)."""
    w = report.headline_width
    models = any(r.model for r in report.rows)  # a model column only when several are compared
    header = ["OS", "target", "precision", "mIoU %", f"boundary mIoU {w}px %", "pixel acc %", "p50 ms", "p90 ms",
              "fps", "size MB", "Δ mIoU", "vs", "Pareto"]
    align = ["---"] * 3 + ["--:"] * 9 + [":-:"]
    if models:
        header, align = ["model", *header], ["---", *align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in report.measured:
        lat = r.latency or {}
        cells = [str(r.output_stride or "?"), r.target, r.precision, _pct(r.miou), _pct(r.boundary_miou.get(w)),
                 _pct(r.pixel_accuracy), _num(lat.get("p50_ms"), ".2f"), _num(lat.get("p90_ms"), ".2f"),
                 _num(lat.get("fps"), ".1f"), _num(r.size_mb, ".2f"), _delta(r),
                 "" if r.reference in (None, r.name) else _short(r.reference, r.model), "*" if r.pareto else ""]
        lines.append("| " + " | ".join([r.model, *cells] if models else cells) + " |")
    return "\n".join(lines)


def _short(reference: str, model: str) -> str:
    """A reference row's name without its model prefix: references never cross models."""
    prefix = f"{slug(model)}-" if model else ""
    return reference[len(prefix):] if prefix and reference.startswith(prefix) else reference


def header_lines(report: Report) -> list[str]:
    """Provenance, settings and machine, one Markdown list item each."""
    s, m = report.settings, report.machine
    machine = f"{m['cpu']}, {m['cores']} cores"
    if m.get("cores_usable") not in (None, m["cores"]):
        machine += f" ({m['cores_usable']} usable)"
    if "memory_gb" in m:
        machine += f", {m['memory_gb']} GB"
    if "board" in m:
        machine += f", {m['board']}"
    lines = [f"- created: {report.created}"]
    lines += [f"- {key}: {value}" for key, value in report.source.items() if value not in (None, "", {})]
    lines += [f"- data: {s['data']} ({s['split']} split), {s['images']} images scored",
              f"- input size: {s['input_size']}"]
    if s.get("export"):
        lines.append(f"- export: {s['export']}")
    lines += [f"- timing: {s['timing']}",
              f"- machine: {machine}; {m['os']}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
              f"- {REFERENCE_RULE}",
              "- boundary mIoU: mIoU over the pixels within a trimap band of the given width around label "
              f"boundaries; the table shows {report.headline_width} px, every width is below and in report.json",
              "- Pareto (*): no other row is both faster (p50) and more accurate (mIoU)"]
    return lines


def to_markdown(report: Report, plots: Sequence[tuple[str, str]] = ()) -> str:
    """The human-readable report: header, headline table, skipped rows, plots, per-class and boundary IoU."""
    out = [f"# {report.title}", "", *header_lines(report), "", main_table(report), ""]
    skipped = [r for r in report.rows if not r.measured]
    if skipped:
        out += ["## Not measured here", ""]
        out += [f"- {r.name}: {r.reason}" + (f" (bundle: {r.bundle})" if r.bundle else "") for r in skipped]
        out.append("")
    for title, file in plots:
        out += [f"![{title}]({file})", ""]
    measured = report.measured
    if measured:
        classes = list(measured[0].per_class_iou)
        out += ["## IoU per class (%)", "", "| row | " + " | ".join(classes) + " |",
                "|---|" + "|".join(["--:"] * len(classes)) + "|"]
        out += ["| " + r.name + " | " + " | ".join(_pct(r.per_class_iou.get(c), 1) for c in classes) + " |"
                for r in measured]
        widths = sorted({w for r in measured for w in r.boundary_miou})
        out += ["", "## Boundary mIoU by trimap band width (%)", "",
                "| row | " + " | ".join(f"{w} px" for w in widths) + " | all pixels |",
                "|---|" + "|".join(["--:"] * (len(widths) + 1)) + "|"]
        out += ["| " + r.name + " | " + " | ".join(_pct(r.boundary_miou.get(w)) for w in widths)
                + f" | {_pct(r.miou)} |" for r in measured]
        out.append("")
    return "\n".join(out)


def to_csv(report: Report) -> str:
    """One line per row, skipped rows included; fractions as in JSON, latency in ms, size in MB."""
    widths = sorted({w for r in report.rows for w in r.boundary_miou})
    header = ["model", "output_stride", "target", "precision", "status", "miou", *[f"boundary_miou_{w}px" for w in widths],
              "pixel_accuracy", "latency_p50_ms", "latency_p90_ms", "latency_mean_ms", "fps", "size_mb",
              "miou_delta_points", "reference", "pareto", "images", "bundle", "reason"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in report.rows:
        lat = r.latency or {}
        writer.writerow([r.model, r.output_stride, r.target, r.precision, r.status, r.miou,
                         *[r.boundary_miou.get(w) for w in widths], r.pixel_accuracy, lat.get("p50_ms"),
                         lat.get("p90_ms"), lat.get("mean_ms"), lat.get("fps"), r.size_mb, r.delta_points,
                         r.reference, int(r.pareto), r.images, r.bundle, r.reason])
    return buffer.getvalue()


PLOTS = (("mIoU against latency", "miou_vs_latency.png"),
         ("boundary mIoU against trimap band width", "boundary_miou.png"))


def write_files(report: Report, folder: Path) -> list[Path]:
    """Write report.md/.csv/.json and the plots into ``folder`` (the caller's atomic directory)."""
    from edge_deeplab.plots import plot_boundary, plot_pareto

    written = []
    plots: Sequence[tuple[str, str]] = ()
    if report.measured:
        plot_pareto(report, folder / PLOTS[0][1])
        plot_boundary(report, folder / PLOTS[1][1])
        plots = PLOTS
        written += [folder / file for _, file in PLOTS]
    written.append(atomic_write_text(folder / "report.md", to_markdown(report, plots) + "\n"))
    written.append(atomic_write_text(folder / "report.csv", to_csv(report)))
    text = json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n"
    written.append(atomic_write_text(folder / "report.json", text))
    return written


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


class Progress:
    """One bar over the combinations' exports and scorings and the timing, on stderr.

    Called with the name of the step that starts; the previous step counts as done then, so the
    bar shows what is running now and never runs ahead of the work.
    """

    def __init__(self, total: int, desc: str = "report") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.started = False

    def __call__(self, what: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(what)

    def skip(self, steps: int) -> None:
        """Steps that will not run (a combination not exported is not scored either)."""
        self.bar.update(steps)

    def write(self, message: str) -> None:
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.started:
            self.bar.update(1)
        self.bar.close()


@contextlib.contextmanager
def _bundle_home(folder: Path, keep: bool) -> Iterator[Path]:
    """``folder/bundles`` when the bundles are kept, else a temporary folder removed afterwards."""
    if keep:
        home = folder / "bundles"
        home.mkdir()
        yield home
        return
    with tempfile.TemporaryDirectory(prefix="edge-deeplab-report-") as tmp:
        yield Path(tmp)


# -- the two ways in ----------------------------------------------------------------------------------

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


_DEVICE_NOTE = "; its bundle is written for the device: measure it there with 'edge-deeplab report --bundles'"


def model_labels(checkpoints: Sequence[Any]) -> list[str]:
    """Names that tell checkpoints apart in one report: backbone and head first, then whatever else
    differs in their training options (``1600 steps``), then, if still equal, the file name."""
    def head(ckpt) -> str:
        c = ckpt.model_config
        name = c.backbone if c.width_mult == 1 else f"{c.backbone} x{c.width_mult:g}"
        return f"{name} {'separable' if c.use_separable else 'dense'}" + ("" if c.decoder else " no-decoder")

    labels = [head(c) for c in checkpoints]
    if len(set(labels)) < len(labels):
        configs = [dict((c.train_state or {}).get("config") or {}) for c in checkpoints]
        ignored = {"out", "workers", "device", "val_every", "val_images", "separable", "decoder", "backbone"}
        keys = sorted({k for cfg in configs for k in cfg if k not in ignored
                       and len({json.dumps(cfg.get(k), default=str) for cfg in configs}) > 1})
        labels = [label + "".join(f" {_option(k, cfg.get(k))}" for k in keys) for label, cfg in zip(labels, configs)]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({Path(c.path).stem})" for label, c in zip(labels, checkpoints)]
    return labels


def _option(key: str, value: Any) -> str:
    return f"{value} steps" if key == "iterations" else f"{key.replace('_', '-')} {value}"


def _describe(ckpt) -> str:
    config = ckpt.model_config
    head = "atrous separable" if config.use_separable else "dense"
    return (f"{config.backbone} (width {config.width_mult}), {head} ASPP/decoder convs, decoder "
            f"{'on' if config.decoder else 'off'}, {ckpt.num_classes} classes")


def report_from_checkpoint(
    checkpoints: Sequence[tuple[str, Any]],
    combos: Sequence[Combination],
    measurement: Measurement,
    export: ExportSettings,
    out: Path,
    force: bool,
    keep_bundles: bool = True,
) -> Report:
    """Export every combination of each checkpoint, measure all bundles, write the report atomically.

    ``checkpoints`` are (model label, loaded Checkpoint) pairs; one checkpoint has the label "".
    Every bundle of every model is timed in the same interleaved round. The exporters'
    step-by-step messages go to ``export.log`` in the folder (and to the terminal with
    ``verbose``), so the terminal shows one progress bar.
    """
    from runtime.files import atomic_dir, sha256_file

    log_lines: list[str] = []
    with atomic_dir(out, overwrite=force) as folder:
        progress = Progress(2 * len(combos) * len(checkpoints) + 1)

        def log(message: str) -> None:
            log_lines.append(message)
            if measurement.verbose:
                progress.write(message)

        planned = [[replace(c, model=label) for c in combos] for label, _ in checkpoints]
        try:
            with _bundle_home(folder, keep_bundles) as home:
                written, skipped = [], []
                for (_, ckpt), mine in zip(checkpoints, planned):
                    done, not_done = export_bundles(ckpt, mine, home, export, measurement.samples.samples, log,
                                                    progress)
                    written += done
                    skipped += not_done
                progress.skip(len(skipped))
                rows = measure_bundles(written, measurement.samples, measurement.band_widths, measurement.timing,
                                       progress, _DEVICE_NOTE if keep_bundles else "")
        finally:
            progress.close()
        for row in rows:
            row.bundle = f"bundles/{Path(row.bundle).name}" if keep_bundles and row.bundle else None
        by_name = {row.name: row for row in [*rows, *skipped]}
        calib = (f"INT8 calibrated on {export.calib_images} images of {export.calib_data} ({export.calib_method}, "
                 f"seed {export.calib_seed})")
        if export.max_drop is not None:
            calib += f", accuracy guard {export.max_drop} mIoU points"
        if len(checkpoints) == 1:
            ckpt = checkpoints[0][1]
            title = f"edge-deeplab report: {Path(ckpt.path).name}"
            source = {"checkpoint": str(ckpt.path), "checkpoint sha256": sha256_file(ckpt.path),
                      "model": _describe(ckpt), "trained on": ckpt.dataset}
        else:
            title = "edge-deeplab report: " + ", ".join(label for label, _ in checkpoints)
            source = {f"model '{label}'": f"{_describe(ckpt)}; trained on {ckpt.dataset}; {ckpt.path} "
                                          f"(sha256 {sha256_file(ckpt.path)[:12]})" for label, ckpt in checkpoints}
        report = Report(
            title=title,
            source=source,
            settings=measurement.settings(
                f"{export.height}x{export.width}, static; resize mode pad (a larger image is shrunk to fit, keeping "
                "its aspect ratio, and padded bottom/right with the mean colour; a smaller one is padded)",
                "bundles take uint8 RGB (normalization in the graph) and return the class mask (ArgMax in the "
                "graph); " + calib + ("; the bundles are in bundles/" if keep_bundles else "")),
            rows=[by_name[c.name] for mine in planned for c in mine],
            headline_width=measurement.headline_width,
        )
        write_files(report, folder)
        atomic_write_text(folder / "export.log", "\n".join(log_lines) + "\n")
    return report


def report_from_bundles(
    bundles: Sequence[tuple[Combination, Path]], folder: Path, measurement: Measurement, out: Path, force: bool
) -> Report:
    """Measure bundles already exported (torch-free) and write the report folder atomically."""
    from runtime.files import atomic_dir
    from runtime.manifest import read_manifest

    with atomic_dir(out, overwrite=force) as tmp:
        progress = Progress(len(bundles) + 1)
        try:
            rows = measure_bundles(bundles, measurement.samples, measurement.band_widths, measurement.timing,
                                   progress)
        finally:
            progress.close()
        manifests = [read_manifest(path, verify_files=False) for _, path in bundles]
        checkpoints = sorted({str(m.source.get("checkpoint")) for m in manifests if m.source.get("checkpoint")})
        digests = sorted({str(m.source.get("sha256"))[:12] for m in manifests if m.source.get("sha256")})
        sizes = sorted({"x".join("dynamic" if d is None else str(d) for d in m.input.shape[2:])
                        + f" (resize mode {m.input.resize})" for m in manifests})
        report = Report(
            title=f"edge-deeplab report: bundles in {folder}",
            source={"bundles": str(folder), "exported from": ", ".join(checkpoints),
                    "checkpoint sha256": ", ".join(digests)},
            settings=measurement.settings(", ".join(sizes) + " (as each bundle was exported)"),
            rows=rows,
            headline_width=measurement.headline_width,
        )
        write_files(report, tmp)
    return report
