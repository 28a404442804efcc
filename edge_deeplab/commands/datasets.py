"""``edge-deeplab datasets check``: validate a dataset before training on it.

Reading every image and mask once takes seconds to minutes; finding the one corrupt PNG or the
mask with label 37 at hour three of training takes longer. Exit status 0 means every sample of
the split reads and fits; 1 means problems were found (they are listed); 2 means the dataset
could not be opened at all.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="validate a dataset: layout, counts, class histogram, problems",
        description="Dataset tools. 'check' reads every image and mask of a split and reports the layout "
        "found, the number of samples, pixels and images per class, and the problems: unmatched files, "
        "unknown labels, image/mask size mismatches and unreadable files.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="read every sample of a split and report problems (exit 1 if any)",
        description="Layouts: PASCAL VOC 2012 (VOCdevkit, with SegmentationClassAug for train_aug), "
        "Cityscapes (leftImg8bit + gtFine labelIds), or a folder with images/, masks/ and classes.yaml. "
        "Also accepts 'synthetic'.",
    )
    check.add_argument("path", help="dataset directory (or 'synthetic')")
    check.add_argument("--split", default="train", help="split to check (default train)")
    check.add_argument("--max-problems", type=int, default=20, help="problems to list (default 20; all are counted)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch on the action (only ``check`` so far)."""
    return {"check": _check}[args.action](args)


def _check(args: argparse.Namespace) -> int:
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.data.check import check_dataset, format_check

    dataset = open_dataset(args.path, args.split)
    result = check_dataset(dataset, args.split, max(args.max_problems, 0), progress=not args.no_progress)
    print(format_check(result))
    return 0 if result.ok else 1
