"""Latency measurement: warm-up, timed runs, percentiles; several models interleaved fairly.

Used by ``edge-deeplab benchmark`` and by the report. Competing models are timed round-robin
(one run of each in turn, starting with a different one each round) so that a burst of machine
noise (another process, thermal throttling on a Jetson) lands on all of them alike instead of
on whichever happened to run during it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from runtime.errors import EdgeDeeplabError


@dataclass(frozen=True)
class LatencyStats:
    """One model's timings in milliseconds; ``fps`` is single-stream throughput (1000 / mean)."""

    name: str
    runs: int
    warmup: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    fps: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(name: str, seconds: Sequence[float], warmup: int = 0) -> LatencyStats:
    """Percentiles of a list of per-run durations in seconds."""
    if not len(seconds):
        raise EdgeDeeplabError(f"{name}: no timed runs to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return LatencyStats(
        name=name,
        runs=len(ms),
        warmup=warmup,
        mean_ms=mean,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        fps=1000.0 / mean if mean > 0 else float("inf"),
    )


def _as_callable(target: Any) -> Callable[[np.ndarray], Any]:
    """A Segmenter is timed through ``predict`` (pre- and post-processing included)."""
    predict = getattr(target, "predict", None)
    if callable(predict):
        return predict
    if callable(target):
        return target
    raise EdgeDeeplabError(f"cannot benchmark {target!r}: it is neither a Segmenter nor callable")


def compare(
    targets: Mapping[str, Any], inputs: Sequence[np.ndarray], runs: int = 50, warmup: int = 5,
    progress: Callable[[int], object] | None = None,
) -> list[LatencyStats]:
    """Time several Segmenters or callables side by side, interleaved round-robin.

    ``inputs`` are cycled (run i uses ``inputs[i % len(inputs)]``), so every target sees the same
    sequence of images. ``progress(n)`` is called after each round (n = calls made in it, one per
    target), outside the timed calls: a progress bar ticks without touching the figures.
    """
    if runs < 1 or warmup < 0:
        raise EdgeDeeplabError(f"runs must be >= 1 and warmup >= 0 (got {runs}, {warmup})")
    if not len(inputs):
        raise EdgeDeeplabError("no benchmark inputs")
    calls = {name: _as_callable(target) for name, target in targets.items()}
    names = list(calls)
    for i in range(warmup):
        for name in names:
            calls[name](inputs[i % len(inputs)])
        if progress is not None:
            progress(len(names))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        image = inputs[i % len(inputs)]
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name](image)
            samples[name].append(time.perf_counter() - start)
        if progress is not None:
            progress(len(names))
    return [summarize(name, samples[name], warmup) for name in names]


def measure(target: Any, inputs: Sequence[np.ndarray], runs: int = 50, warmup: int = 5, name: str = "model") -> LatencyStats:
    """Time one Segmenter or callable."""
    return compare({name: target}, inputs, runs, warmup)[0]


def format_table(stats: Sequence[LatencyStats]) -> str:
    """A plain-text table, one row per model, columns aligned."""
    header = ["model", "p50 ms", "p90 ms", "p99 ms", "mean ms", "fps", "runs"]
    rows = [
        [s.name, f"{s.p50_ms:.2f}", f"{s.p90_ms:.2f}", f"{s.p99_ms:.2f}", f"{s.mean_ms:.2f}", f"{s.fps:.1f}", str(s.runs)]
        for s in stats
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
