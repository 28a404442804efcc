"""``edge-deeplab datasets check``: validate a dataset before training on it.

Reading every image and mask once takes seconds to minutes; finding the one corrupt PNG or the
mask with label 37 at hour three of training takes longer. Exit status 0 means every sample of
the split reads and fits; 1 means problems were found (they are listed); 2 means the dataset
could not be opened at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from runtime.errors import EdgeDeeplabError

app = typer.Typer(help="Dataset tools. 'check' reads every image and mask of a split and reports the layout found, the "
                       "number of samples, pixels and images per class, and the problems: unmatched files, unknown "
                       "labels, image/mask size mismatches and unreadable files. 'preview' writes a few samples as "
                       "PNGs to look at.", no_args_is_help=True)


@app.callback()
def datasets() -> None:
    """Dataset tools (a group: 'check' and 'preview' are its commands)."""


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


@app.command(help="Write the first N samples of a split as PNGs, each image beside its colourized mask, so a person "
                  "can judge the data (and see what the built-in synthetic set asks of a model).")
def preview(
    out: Annotated[Path, typer.Option(help="folder to write the PNGs into", show_default=False)],
    path: Annotated[str, typer.Argument(help="dataset directory or spec (synthetic:size=N for other sizes)")
                    ] = "synthetic",
    split: Annotated[str, typer.Option(help="split to show")] = "val",
    count: Annotated[int, typer.Option("-n", "--count", min=1, help="how many samples")] = 8,
    force: Annotated[bool, typer.Option("--force", help="replace PNGs that already exist")] = False,
) -> int:
    import numpy as np

    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.data.synthetic import SyntheticShapes, describe
    from runtime.files import check_can_create, check_writable
    from runtime.images import write_image
    from runtime.outputs import refuse_overlap
    from runtime.postprocess import colorize

    refuse_overlap(out, [path])
    if os.path.isfile(out):
        raise EdgeDeeplabError(f"--out {out} is a file; preview writes its PNGs into a folder")
    check_can_create(out / "sample.png")  # a folder we may write in, or may make
    dataset = open_dataset(path, split)
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    files = [check_writable(out / f"{sample.name}.png", force) for sample in samples]  # all, before any is written
    dataset_files = [file for _, image, mask in getattr(dataset, "pairs", []) for file in (image, mask)]
    for file in files:
        if file.exists():  # a new file replaces nothing; an existing one may be the dataset's own
            refuse_overlap(file, dataset_files)
    for sample, file in zip(samples, files):
        write_image(file, np.concatenate([sample.image, colorize(sample.mask, dataset.palette)], axis=1))
    if isinstance(dataset, SyntheticShapes):
        print(describe())
    print(f"wrote {len(files)} samples of {path}/{split} to {out}")
    return 0
