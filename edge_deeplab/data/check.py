"""Validating a dataset before training on it, so a bad file fails in seconds, not mid-epoch.

Two halves. :func:`check_labels` is the per-sample test every on-disk reader applies when a sample
is read: a mask label that is neither a class index nor ignore is an error naming the file and the
label (training on it would crash inside the loss, or worse, silently learn a wrong class).
:func:`check_dataset` reads every sample of a split, collects the problems instead of stopping at
the first one, and counts pixels and images per class; ``edge-deeplab datasets check`` prints it.

A reader reports two kinds of problem: those found while listing files (an image without a mask,
a list entry without its file) in its ``problems`` attribute, and those found when a sample is
read, raised as :class:`SampleProblem` so the check can tell the kinds apart in its summary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from edge_deeplab.data.dataset import IGNORE_INDEX, SegmentationDataset
from runtime.errors import EdgeDeeplabError

# Problem kinds, as they appear in the summary line of a check.
UNMATCHED = "unmatched file"
MISSING = "missing file"
UNREADABLE = "unreadable file"
SIZE_MISMATCH = "size mismatch"
UNKNOWN_LABEL = "unknown label"


class SampleProblem(EdgeDeeplabError):
    """A sample that cannot be used; ``kind`` is one of the kinds above, the message names the file."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Problem:
    """One problem found by a reader or a check: its kind and a one-line message naming the file."""

    kind: str
    message: str


def check_labels(mask: np.ndarray, num_classes: int, path: object, ignore_value: int = IGNORE_INDEX) -> None:
    """Raise :class:`SampleProblem` if ``mask`` holds a label that is not a class nor ``ignore_value``.

    ``max`` first: on a valid mask (the usual case) that is the only pass over the pixels.
    """
    if mask.size == 0 or int(mask.max()) < num_classes:
        return
    values = np.unique(mask)
    bad = [int(v) for v in values if v >= num_classes and v != ignore_value]
    if bad:
        more = f" (and {len(bad) - 1} other unknown labels)" if len(bad) > 1 else ""
        raise SampleProblem(
            UNKNOWN_LABEL,
            f"mask {path} has label {bad[0]}{more}; the dataset has {num_classes} classes "
            f"(0-{num_classes - 1}) and {ignore_value} = ignore",
        )


@dataclass
class CheckResult:
    """What :func:`check_dataset` found: counts, the class histogram and the problems.

    ``pixels[c]`` and ``images[c]`` count the pixels labelled ``c`` and the samples that contain
    ``c``, over the samples that could be read; ``problems`` keeps the first ``max_problems``
    problems in the order found, ``problem_kinds`` counts all of them by kind.
    """

    layout: str
    split: str
    classes: list[str]
    samples: int
    readable: int = 0
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    images: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ignore_pixels: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_kinds: Counter = field(default_factory=Counter)

    @property
    def problem_count(self) -> int:
        return sum(self.problem_kinds.values())

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add_problem(self, problem: Problem, max_problems: int) -> None:
        self.problem_kinds[problem.kind] += 1
        if len(self.problems) < max_problems:
            self.problems.append(problem)


def check_dataset(
    dataset: SegmentationDataset,
    split: str,
    max_problems: int = 20,
    progress: bool = True,
) -> CheckResult:
    """Read every sample of ``dataset`` and collect problems and the class histogram.

    Works on any :class:`SegmentationDataset`; on-disk readers add a ``layout`` description and
    listing-time ``problems``. A :class:`SampleProblem` (or any :class:`EdgeDeeplabError`) from
    one sample is recorded and the check goes on with the next.
    """
    from runtime.progress import progress_bar

    num_classes = dataset.num_classes
    result = CheckResult(
        layout=str(getattr(dataset, "layout", dataset.name)),
        split=split,
        classes=list(dataset.classes),
        samples=len(dataset),
        pixels=np.zeros(num_classes, dtype=np.int64),
        images=np.zeros(num_classes, dtype=np.int64),
    )
    listing_problems: Iterable[Problem] = getattr(dataset, "problems", ())
    for problem in listing_problems:
        result.add_problem(problem, max_problems)
    for index in progress_bar(range(len(dataset)), desc="checking", unit="img", enabled=progress):
        try:
            sample = dataset[index]
        except SampleProblem as exc:
            result.add_problem(Problem(exc.kind, str(exc)), max_problems)
            continue
        except EdgeDeeplabError as exc:
            result.add_problem(Problem(UNREADABLE, str(exc)), max_problems)
            continue
        counts = np.bincount(sample.mask.ravel(), minlength=256)
        result.pixels += counts[:num_classes]
        result.images += counts[:num_classes] > 0
        result.ignore_pixels += int(counts[dataset.ignore_index])
        result.readable += 1
    return result


def _plural(noun: str, n: int) -> str:
    if n == 1:
        return noun
    return noun + ("es" if noun.endswith(("ch", "sh", "s", "x")) else "s")


def format_check(result: CheckResult) -> str:
    """The human-readable report ``datasets check`` prints."""
    lines = [
        f"layout:   {result.layout}",
        f"split:    {result.split}: {result.samples} samples, {result.readable} read without problems",
        f"classes:  {len(result.classes)} (255 = ignore)",
        "",
        "class histogram (pixels, share of labelled pixels, images containing the class):",
    ]
    labelled = int(result.pixels.sum())
    width = max([len(name) for name in result.classes] + [6])
    for index, name in enumerate(result.classes):
        pixels = int(result.pixels[index])
        share = 100.0 * pixels / labelled if labelled else 0.0
        flag = "   <- never seen" if result.readable and result.images[index] == 0 else ""
        lines.append(
            f"  {index:3d} {name:<{width}} {pixels:>14,d} {share:6.2f}% {int(result.images[index]):>8,d}{flag}"
        )
    lines.append(f"  255 {'ignore':<{width}} {result.ignore_pixels:>14,d}")
    lines.append("")
    if result.ok:
        lines.append("no problems found")
    else:
        kinds = ", ".join(f"{n} {_plural(kind, n)}" for kind, n in result.problem_kinds.most_common())
        shown = len(result.problems)
        lines.append(f"{result.problem_count} problems ({kinds}); the first {shown}:")
        lines.extend(f"  - {problem.message}" for problem in result.problems)
    return "\n".join(lines)
