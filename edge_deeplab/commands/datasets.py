"""``edge-deeplab datasets check``: validate a dataset before training on it.

Reading every image and mask once takes seconds to minutes; finding the one corrupt PNG or the
mask with label 37 at hour three of training takes longer. Exit status 0 means every sample of
the split reads and fits; 1 means problems were found (they are listed); 2 means the dataset
could not be opened at all.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Dataset tools. 'check' reads every image and mask of a split and reports the layout found, the "
                       "number of samples, pixels and images per class, and the problems: unmatched files, unknown "
                       "labels, image/mask size mismatches and unreadable files.", no_args_is_help=True)


@app.callback()
def datasets() -> None:
    """Dataset tools (a group: 'check' is its command)."""


@app.command(help="Read every sample of a split and report problems (exit 1 if any). Layouts: PASCAL VOC 2012 "
                  "(VOCdevkit, with SegmentationClassAug for train_aug), Cityscapes (leftImg8bit + gtFine labelIds), "
                  "or a folder with images/, masks/ and classes.yaml. Also accepts 'synthetic'.")
def check(
    path: Annotated[str, typer.Argument(help="dataset directory (or 'synthetic')", show_default=False)],
    split: Annotated[str, typer.Option(help="split to check")] = "train",
    max_problems: Annotated[int, typer.Option(min=0, help="problems to list (all are counted)")] = 20,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
) -> int:
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.data.check import check_dataset, format_check

    dataset = open_dataset(path, split)
    result = check_dataset(dataset, split, max_problems, progress=not no_progress)
    print(format_check(result))
    return 0 if result.ok else 1
