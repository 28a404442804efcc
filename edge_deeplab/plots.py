"""The report's two figures, drawn with matplotlib's Agg renderer straight to PNG.

``Figure`` objects are built directly (no ``pyplot``), so drawing needs no display, touches no
global figure state and works on a headless Jetson. Colours are fixed per output stride and
markers per target, so figures from different reports read the same way.
"""

from __future__ import annotations

from pathlib import Path

from edge_deeplab.report.rows import Report, Row
from runtime.files import atomic_file

STRIDE_COLOURS = {8: "#d62728", 16: "#1f77b4", 32: "#2ca02c"}
OTHER_COLOUR = "#7f7f7f"  # a bundle whose manifest records no output stride
TARGET_MARKERS = {"onnx": "o", "onnxruntime": "s", "openvino": "^", "tensorrt": "D"}
PRECISION_LINES = {"fp32": "-", "fp16": "--", "int8": ":"}
DPI = 120


def _colour(row: Row) -> str:
    return STRIDE_COLOURS.get(row.output_stride or 0, OTHER_COLOUR)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


def _legends(axes, rows: list[Row], line_styles: bool = False) -> None:
    """Two legends: colour = output stride, marker (and line style) = target (precision)."""
    from matplotlib.lines import Line2D

    strides = sorted({r.output_stride or 0 for r in rows})
    targets = [t for t in TARGET_MARKERS if any(r.target == t for r in rows)]
    colour_handles = [Line2D([], [], color=STRIDE_COLOURS.get(s, OTHER_COLOUR), marker="o", linestyle="",
                             label=f"OS {s}" if s else "OS ?") for s in strides]
    marker_handles = [Line2D([], [], color="black", marker=TARGET_MARKERS[t], linestyle="", markerfacecolor="none",
                             label=t) for t in targets]
    if line_styles:
        precisions = [p for p in PRECISION_LINES if any(r.precision == p for r in rows)]
        marker_handles += [Line2D([], [], color="black", linestyle=PRECISION_LINES[p], label=p) for p in precisions]
    # Outside the axes, right of the plot: inside they would cover points or lines.
    first = axes.legend(handles=colour_handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="output stride",
                        fontsize=8, title_fontsize=8)
    axes.add_artist(first)
    axes.legend(handles=marker_handles, loc="lower left", bbox_to_anchor=(1.02, 0.0),
                title="target / precision" if line_styles else "target", fontsize=8, title_fontsize=8)


def plot_pareto(report: Report, path: Path) -> Path:
    """mIoU against p50 latency, one colour per output stride, one marker per target, labelled by
    precision (and model, when several are compared), with the Pareto front (the rows nothing beats on both axes) drawn as a step line."""
    rows = [r for r in report.measured if r.latency and r.miou is not None]
    figure = _figure(9.0, 5.5)
    axes = figure.add_subplot()
    for row in rows:
        x, y = row.latency["p50_ms"], 100 * row.miou
        axes.scatter([x], [y], color=_colour(row), marker=TARGET_MARKERS.get(row.target, "o"), s=60,
                     edgecolors="black" if row.pareto else "none", linewidths=1.0, zorder=3)
        # With several models, the label names the model too (its label without the backbone).
        precision = f"{row.precision} QAT" if row.qat else row.precision
        text = f"{row.model.split(' ', 1)[-1]} {precision}" if row.model else precision
        axes.annotate(text, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.latency["p50_ms"])
    if front:
        axes.step([r.latency["p50_ms"] for r in front], [100 * r.miou for r in front], where="post",
                  color="black", linewidth=1.0, alpha=0.6, zorder=2, label="Pareto front")
    axes.set_xlabel("latency p50 (ms per image, pre/post-processing included)")
    axes.set_ylabel("mIoU (%)")
    axes.set_title(f"{report.title}\nmIoU against latency on {report.machine.get('cpu', 'this machine')}",
                   fontsize=9)
    axes.grid(True, alpha=0.3)
    _legends(axes, rows)
    return _save(figure, path)


def plot_boundary(report: Report, path: Path) -> Path:
    """Boundary mIoU against trimap band width, one line per row: how far from the object edges
    each output stride and precision loses accuracy (the paper's figure 5 measurement)."""
    rows = [r for r in report.measured if r.boundary_miou]
    figure = _figure(9.0, 5.5)
    axes = figure.add_subplot()
    for row in rows:
        widths = sorted(w for w, v in row.boundary_miou.items() if v is not None)
        ys = [100 * row.boundary_miou[w] for w in widths]
        axes.plot(widths, ys, color=_colour(row), marker=TARGET_MARKERS.get(row.target, "o"),
                  linestyle=PRECISION_LINES.get(row.precision, "-"), markersize=5, markerfacecolor="none",
                  linewidth=1.2, label=row.name)
    all_widths = sorted({w for r in rows for w in r.boundary_miou})
    axes.set_xscale("log", base=2)
    axes.set_xticks(all_widths, [str(w) for w in all_widths])
    axes.minorticks_off()
    axes.set_xlabel("trimap band width (px around label boundaries)")
    axes.set_ylabel("boundary mIoU (%)")
    axes.set_title(f"{report.title}\nboundary mIoU against trimap band width", fontsize=9)
    axes.grid(True, alpha=0.3)
    _legends(axes, rows, line_styles=True)
    return _save(figure, path)
