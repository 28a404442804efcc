"""The two ways to a report folder: from checkpoints (export, then measure) or from bundles on disk.

:func:`report_from_checkpoint` exports one bundle per combination of each checkpoint first (torch,
imported lazily, by :func:`~edge_deeplab.report.exporting.export_bundles`);
:func:`report_from_bundles` measures bundles already exported (torch-free, so a Jetson reports on
what was exported elsewhere). Both show one progress bar and write the folder atomically.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from edge_deeplab.report.exporting import ExportSettings, export_bundles
from edge_deeplab.report.measure import Measurement, measure_bundles
from edge_deeplab.report.plan import Combination
from edge_deeplab.report.render import write_files
from edge_deeplab.report.rows import Report
from runtime.files import atomic_write_text


class Progress:
    """One bar over the combinations' exports and scorings and the timing, on stderr.

    Called with the name of the step that starts; the previous step counts as done then, so the
    bar shows what is running now and never runs ahead of the work.
    """

    def __init__(self, total: int, desc: str = "report") -> None:
        from runtime.progress import progress_bar

        self.bar = progress_bar(total=total, desc=desc, unit="step")
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


_DEVICE_NOTE = "; its bundle is written for the device: measure it there with 'edge-deeplab report --bundles'"


def qat_cost(bundles: Sequence[tuple[Combination, Path]]) -> str | None:
    """What ``--qat`` cost, for the header: steps and rate, and the minutes the fine-tuning took in
    all (and per target, with several), from the QAT bundles' own records; None without QAT bundles.

    The table shows what QAT bought at inference (mIoU, latency); this is its price at export time.
    """
    from runtime.manifest import read_manifest

    records = [(combo.target, (read_manifest(path, verify_files=False).calibration or {}).get("qat") or {})
               for combo, path in bundles if combo.qat]
    if not records:
        return None
    seconds: dict[str, float] = {}
    for target, record in records:
        seconds[target] = seconds.get(target, 0.0) + float(record.get("seconds") or 0.0)
    steps = "/".join(sorted({str(r.get("steps", "?")) for _, r in records}))
    rates = "/".join(sorted({format(r["lr"], "g") for _, r in records if "lr" in r}))
    text = (f"the quant column's QAT rows were fine-tuned for {steps} steps at lr {rates or '?'} after calibration, "
            f"the PTQ rows not; the fine-tuning took {_minutes(sum(seconds.values()))} in all "
            f"({len(records)} bundle{'s' if len(records) > 1 else ''})")
    if len(seconds) > 1:
        text += ": " + ", ".join(f"{target} {_minutes(s)}" for target, s in seconds.items())
    return text


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _describe(ckpt) -> str:
    config = ckpt.model_config
    head = "atrous separable" if config.use_separable else "dense"
    return (f"{config.backbone} (width {config.width_mult}), {head} ASPP/decoder convs, decoder "
            f"{'on' if config.decoder else 'off'}, {ckpt.num_classes} classes")


def _note_qat(report: Report, bundles: Sequence[tuple[Combination, Path]]) -> None:
    """Put QAT's cost into the report's settings (the header's ``QAT`` line) when it has QAT bundles."""
    cost = qat_cost(bundles)
    if cost:
        report.settings["qat"] = cost


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
        _note_qat(report, written)
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
        _note_qat(report, bundles)
        write_files(report, tmp)
    return report
