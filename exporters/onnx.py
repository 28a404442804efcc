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

The graph ends the way a device wants it (:class:`DeployModel`): it can take uint8 RGB and
normalize inside, and it returns the class mask (``ArgMax`` over the classes of the logits that
the model already upsamples to input size, then ``Cast`` to uint8), the logits, or both. ArgMax
and Cast to uint8 as a network output are in TensorRT 10's ONNX operator table, and OpenVINO and
ONNX Runtime run them; the argmax then happens on the accelerator and one byte per pixel is copied
back instead of C floats.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_write_bytes
from runtime.manifest import LOGITS, MASK

INPUT_NAME = "image"
MIN_OPSET = 17
# The newest opset torch's exporter writes (torch.onnx._constants.ONNX_MAX_OPSET: 23 in torch 2.13,
# the newest torch the 'export' extra installs); an older torch refuses some of these in one line.
MAX_OPSET = 23


def min_input_side(output_stride: int) -> int:
    """The smallest input height/width a model at ``output_stride`` runs on: one pixel more than
    the stride, so the encoder's last feature map is at least 2x2 (each stride-2 conv halves a
    side, rounding up) and ASPP's image pooling has more than one cell to average."""
    return output_stride + 1


def deploy_model(model, uint8_input: bool, outputs: Sequence[str], mean: Sequence[float], std: Sequence[float]):
    """Wrap ``model`` into the graph a bundle ships: input handling in front, the mask at the end.

    ``uint8_input`` folds ``(x / 255 - mean) / std`` into the graph, so a device feeds decoded bytes
    straight in (no float conversion on the host, a 4x smaller input to copy). ``outputs`` names
    the graph outputs in order: ``mask`` (argmax over classes, uint8 up to 256 classes, else
    int32) and/or ``logits``.
    """
    import torch

    class DeployModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.uint8_input = uint8_input
            self.outputs = tuple(outputs)
            if uint8_input:
                self.register_buffer("offset", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
                self.register_buffer("scale", 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0))

        def forward(self, image):
            if self.uint8_input:
                image = (image.to(torch.float32) - self.offset) * self.scale
            logits = self.model(image)
            named = {LOGITS: logits}
            if MASK in self.outputs:  # the class count is static, so this is decided at export time
                named[MASK] = logits.argmax(dim=1).to(torch.uint8 if logits.shape[1] <= 256 else torch.int32)
            result = tuple(named[name] for name in self.outputs)
            return result if len(result) > 1 else result[0]

    return DeployModel().eval()


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
    outputs: Sequence[str] = (MASK,),
) -> Path:
    """Export an eval-mode model to ``dest`` (written atomically) and return the path.

    ``dynamic`` makes batch, height and width symbolic (``batch``, ``height``, ``width``);
    otherwise the input is fixed at 1 x 3 x ``height`` x ``width``. ``outputs``: see
    :func:`deploy_model`.
    """
    import onnx
    import torch
    from onnxscript.optimizer import optimize

    if opset < MIN_OPSET:
        raise EdgeDeeplabError(f"--opset must be {MIN_OPSET} or later (Resize and ReduceMean as used here), got {opset}")
    model = deploy_model(model.eval(), uint8_input, outputs, mean, std)
    if uint8_input:
        example = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8)
    else:
        example = torch.randn(1, 3, height, width)
    axes = {0: "batch", 2: "height", 3: "width"}
    output_axes = {LOGITS: axes, MASK: {0: "batch", 1: "height", 2: "width"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice, not actionable here
        _check_opset_exportable(torch, opset)
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            dynamic_axes={INPUT_NAME: axes, **{name: output_axes[name] for name in outputs}} if dynamic else None,
            do_constant_folding=True,
        )
    proto = optimize(onnx.load_from_string(buffer.getvalue()))
    proto = onnx.shape_inference.infer_shapes(proto)
    onnx.checker.check_model(proto)
    return atomic_write_bytes(dest, proto.SerializeToString())


def _check_opset_exportable(torch, opset: int) -> None:
    """One line when this torch cannot write ``opset`` (an older torch stops below :data:`MAX_OPSET`)."""
    newest = getattr(getattr(torch.onnx, "_constants", None), "ONNX_MAX_OPSET", MAX_OPSET)
    if opset > newest:
        raise EdgeDeeplabError(f"--opset {opset}: torch {torch.__version__} exports opsets {MIN_OPSET} to {newest}")


def torch_logits(model, arrays: Sequence[np.ndarray], uint8_input: bool, mean, std) -> list[np.ndarray]:
    """The PyTorch reference logits for prepared inputs (the verification baseline)."""
    import torch

    model = deploy_model(model, uint8_input, (LOGITS,), mean, std)
    out = []
    with torch.no_grad():
        for array in arrays:
            out.append(model(torch.from_numpy(np.ascontiguousarray(array))).numpy())
    return out
