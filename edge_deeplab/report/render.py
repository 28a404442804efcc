"""A report as files: the Markdown (header, headline table, per-class and boundary IoU), the CSV,
the JSON and the two plots, written into the caller's (atomic) folder.

Only formatting: every figure comes measured in the :class:`Report`, so the three files always say
the same thing.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_deeplab.report.plan import quant_label, slug
from edge_deeplab.report.rows import REFERENCE_RULE, Report, Row
from runtime.files import atomic_write_text


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _delta(row: Row) -> str:
    if row.delta_points is None:
        return "n/a"
    return "ref" if row.reference == row.name else f"{row.delta_points:+.2f}"


def main_table(report: Report) -> str:
    """The headline Markdown table (measured rows; Pareto-optimal rows marked).

    A ``model`` column only when several checkpoints are compared, a ``quant`` column (PTQ/QAT)
    only when some row is QAT: a table without them reads as it always did.
    """
    w = report.headline_width
    models = any(r.model for r in report.rows)
    quant = any(r.qat for r in report.rows)
    header = ["OS", "target", "precision", *(["quant"] if quant else []), "mIoU %", f"boundary mIoU {w}px %",
              "pixel acc %", "p50 ms", "p90 ms", "fps", "size MB", "Δ mIoU", "vs", "Pareto"]
    align = ["---"] * (4 if quant else 3) + ["--:"] * 9 + [":-:"]
    if models:
        header, align = ["model", *header], ["---", *align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in report.measured:
        lat = r.latency or {}
        cells = [str(r.output_stride or "?"), r.target, r.precision,
                 *([quant_label(r.precision, r.qat) or "-"] if quant else []), _pct(r.miou), _pct(r.boundary_miou.get(w)),
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
    if "int8_kernels" in m:  # an INT8 row's mIoU depends on the integer kernels this CPU has
        machine += f"; INT8: {m['int8_kernels']}"
    lines = [f"- created: {report.created}"]
    lines += [f"- {key}: {value}" for key, value in report.source.items() if value not in (None, "", {})]
    lines += [f"- data: {s['data']} ({s['split']} split), {s['images']} images scored",
              f"- input size: {s['input_size']}"]
    if s.get("export"):
        lines.append(f"- export: {s['export']}")
    if s.get("qat"):
        lines.append(f"- QAT: {s['qat']}")
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
    header = ["model", "output_stride", "target", "precision", "quant", "status", "miou",
              *[f"boundary_miou_{w}px" for w in widths], "pixel_accuracy", "latency_p50_ms", "latency_p90_ms",
              "latency_mean_ms", "fps", "size_mb", "miou_delta_points", "reference", "pareto", "images", "bundle",
              "reason"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in report.rows:
        lat = r.latency or {}
        writer.writerow([r.model, r.output_stride, r.target, r.precision, quant_label(r.precision, r.qat), r.status,
                         r.miou, *[r.boundary_miou.get(w) for w in widths], r.pixel_accuracy, lat.get("p50_ms"),
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
