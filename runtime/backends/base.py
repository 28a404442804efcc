"""What every backend offers the :class:`runtime.segmenter.Segmenter`: one call, batch in, logits out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from runtime.errors import BundleError
from runtime.manifest import Manifest


class Backend(ABC):
    """One loaded model. Subclasses set the attributes below and implement :meth:`run`.

    ``static_hw``: the fixed input height/width, or ``None`` when the model takes any size.
    ``max_hw``: for a dynamic model, the largest input it accepts (TensorRT's profile), else None.
    ``batch_size``: the fixed batch dimension, or ``None`` when the batch is dynamic.
    ``max_batch``: the largest batch a dynamic-batch model accepts (``None``: no limit).
    """

    name: str = ""
    static_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None
    batch_size: int | None = None
    max_batch: int | None = None

    def __init__(self, manifest: Manifest, bundle_dir: Path) -> None:
        self.manifest = manifest
        self.bundle_dir = bundle_dir
        shape = manifest.input.shape
        if len(shape) != 4:
            raise BundleError(f"{bundle_dir}: input shape {shape} is not NCHW")
        self.batch_size = shape[0]
        self.static_hw = None if manifest.input.dynamic else (int(shape[2]), int(shape[3]))

    def model_path(self, role: str = "model") -> Path:
        """Path of a bundle file by its manifest role, with a clear error when it is not listed."""
        name = self.manifest.files.get(role)
        if name is None:
            raise BundleError(f"{self.bundle_dir}: manifest lists no '{role}' file")
        return self.bundle_dir / name

    @abstractmethod
    def run(self, batch: np.ndarray, output: str) -> np.ndarray:
        """N x 3 x H x W input (dtype per the manifest) -> the graph output named ``output``.

        ``output`` is one of the manifest's ``outputs``: ``mask`` (N x H x W class indices) or
        ``logits`` (N x C x H x W floats). Only that output is brought back to the host: on a GPU a
        mask is C x 4 times fewer bytes to copy than the logits it was computed from.
        The returned array may be backed by the backend's own buffer: it is valid until the next
        call, which is all the segmenter needs and saves a copy of every output.
        """

    def close(self) -> None:
        """Release device resources; the default has none to release."""

    def check_model_io(self, input_names: list[str], output_names: list[str], model_hw: list) -> None:
        """Fail with one line when the model file does not match its manifest (a file mix-up)."""
        spec = self.manifest.input
        if spec.name not in input_names:
            raise BundleError(
                f"{self.bundle_dir}: model input is {input_names}, manifest says {spec.name!r} (mismatched model file?)"
            )
        missing = [name for name in self.manifest.outputs if name not in output_names]
        if missing:
            raise BundleError(
                f"{self.bundle_dir}: model outputs are {output_names}, manifest says "
                f"{self.manifest.outputs} (mismatched model file?)"
            )
        for axis, (model_dim, manifest_dim) in enumerate(zip(model_hw, spec.shape[2:]), start=2):
            if isinstance(model_dim, int) and model_dim > 0 and model_dim != manifest_dim:
                raise BundleError(
                    f"{self.bundle_dir}: model input axis {axis} is {model_dim}, manifest says {manifest_dim}"
                )
