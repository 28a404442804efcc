"""Datasets as numpy arrays (torch-free); :mod:`edge_deeplab.data.torch_dataset` adds tensors."""

from edge_deeplab.data.base import (
    IGNORE_INDEX,
    READERS,
    Sample,
    SegmentationDataset,
    open_dataset,
    register_reader,
)

__all__ = [
    "IGNORE_INDEX",
    "READERS",
    "Sample",
    "SegmentationDataset",
    "open_dataset",
    "register_reader",
]
