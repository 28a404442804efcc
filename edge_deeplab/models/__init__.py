"""DeepLabv3+ models: configuration (torch-free) and the PyTorch networks (lazy).

Importing this package, or ``edge_deeplab.models.config``, does not import torch: names that need
torch are resolved on first access (PEP 562), so torch-free code such as the CLI, reports and
bundle readers can name a :class:`ModelConfig` on a machine without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from edge_deeplab.models.config import BACKBONES, OUTPUT_STRIDES, ModelConfig

if TYPE_CHECKING:
    from edge_deeplab.models.deeplab import (
        DeepLab,
        build_model,
        count_parameters,
        set_output_stride,
    )

_LAZY = {
    "DeepLab": "edge_deeplab.models.deeplab",
    "build_model": "edge_deeplab.models.deeplab",
    "count_parameters": "edge_deeplab.models.deeplab",
    "set_output_stride": "edge_deeplab.models.deeplab",
}

__all__ = ["BACKBONES", "OUTPUT_STRIDES", "ModelConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import the torch-backed module the first time one of its names is asked for."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
