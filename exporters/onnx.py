"""PyTorch -> ONNX: one self-contained, constant-folded opset-17 file, static or dynamic H/W.

Why the TorchScript-based exporter (``dynamo=False``) with ``opset_version=17``: on this model it
gives a correct graph at every input size (the image-pooling branch becomes
``ReduceMean`` + ``Resize`` whose output size is read from ``Shape`` of the feature map, so a
dynamic height/width stays right), it exports in well under a second (the dynamo exporter takes
~10 s for the same tiny network and always writes opset 18, which older TensorRT parsers on Jetson
handle less well), and after ``onnxscript.optimizer.optimize`` (constant folding, dead-code and
identity removal) the graph is the same size as the dynamo exporter's: Conv/Clip/Relu/Add plus
three Resizes and, for a dynamic model, a handful of shape ops. Weights are always stored inside
the one file (no external data), which every downstream tool here (ORT quantization, OpenVINO,
trtexec) reads without surprises.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_write_bytes

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
MIN_OPSET = 17


def _normalizing_wrapper(model, mean: Sequence[float], std: Sequence[float]):
    """Wrap ``model`` so it takes uint8 RGB NCHW and normalizes inside the graph.

    Folding ``(x / 255 - mean) / std`` into the graph lets a device feed camera bytes straight in
    (no float conversion on the host) and makes the model's input 4x smaller to copy.
    """
    import torch

    class NormalizedInput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("offset", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("scale", 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0))

        def forward(self, image):
            return self.model((image.to(torch.float32) - self.offset) * self.scale)

    return NormalizedInput().eval()


def export_onnx(
    model,
    dest: str | Path,
    height: int,
    width: int,
    dynamic: bool = False,
    uint8_input: bool = False,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    opset: int = MIN_OPSET,
) -> Path:
    """Export an eval-mode model to ``dest`` (written atomically) and return the path.

    ``dynamic`` makes batch, height and width symbolic (``batch``, ``height``, ``width``);
    otherwise the input is fixed at 1 x 3 x ``height`` x ``width``.
    """
    import onnx
    import torch
    from onnxscript.optimizer import optimize

    if opset < MIN_OPSET:
        raise EdgeDeeplabError(f"--opset must be {MIN_OPSET} or later (Resize and ReduceMean as used here), got {opset}")
    model = model.eval()
    if uint8_input:
        model = _normalizing_wrapper(model, mean, std)
        example = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8)
    else:
        example = torch.randn(1, 3, height, width)
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice, not actionable here
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None,
            do_constant_folding=True,
        )
    proto = optimize(onnx.load_from_string(buffer.getvalue()))
    proto = onnx.shape_inference.infer_shapes(proto)
    onnx.checker.check_model(proto)
    return atomic_write_bytes(dest, proto.SerializeToString())


def torch_logits(model, arrays: Sequence[np.ndarray], uint8_input: bool, mean, std) -> list[np.ndarray]:
    """The PyTorch reference logits for prepared inputs (the verification baseline)."""
    import torch

    if uint8_input:
        model = _normalizing_wrapper(model, mean, std)
    out = []
    with torch.no_grad():
        for array in arrays:
            out.append(model(torch.from_numpy(np.ascontiguousarray(array))).numpy())
    return out
