"""OpenVINO INT8 with quantization-aware fine-tuning (``--qat STEPS``), through NNCF's torch flow.

NNCF's QAT recipe for OpenVINO: ``nncf.quantize`` on the torch model (post-training quantization
that inserts trainable FakeQuantize modules), ordinary training, then ``openvino.convert_model``,
which turns each FakeQuantize into OpenVINO's FakeQuantize. The quantization scheme is the PTQ
bundle's (:func:`exporters.openvino.quantize_int8`): preset ``MIXED``, overflow fix on every
convolution (7-bit weights), all calibration images, so the fine-tune starts from the same kind of
model the PTQ bundle is, and the two bundles differ only by the fine-tuning.

Choices, and why:

* NNCF quantizes the bare model (normalized float32 in, logits out), and the bundle's wrapper
  (:func:`exporters.onnx.deploy_model`: uint8 input normalized inside, the ArgMax mask) is put
  around the fine-tuned model only for conversion. So the training batches
  (:class:`exporters.request.QatInput`, normalized float32) feed the very model NNCF calibrated,
  and the calibration arrays (uint8 when ``uint8_input``) are normalized here with the wrapper's
  own arithmetic, so NNCF measures the ranges of the inputs the bundle's first convolution sees.
* BatchNorm stays in eval mode while the rest trains: its running statistics are frozen (its
  scale and shift still learn). A few hundred steps on small batches would otherwise replace
  the checkpoint's statistics with noisy ones, and the deployed graph folds BatchNorm with
  frozen statistics anyway, so training with them is training the function that ships.
* The quantizers' scales are not trained (:mod:`exporters.fine_tune`: the weights adapt to the
  grid); only the checkpoint's own parameters are handed to the optimizer.
* The request's model is deep-copied first: NNCF inserts its quantizers into the module it is
  given, and the caller's model stays the float checkpoint.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Sequence

import numpy as np

from calibration.inputs import PreparedImage
from exporters.fine_tune import fine_tune
from exporters.onnx import INPUT_NAME, deploy_model
from exporters.openvino import OVERFLOW_FIX, _ov, _progress_to_stderr
from exporters.request import ExportRequest
from exporters.verify import Outputs, Runner
from runtime.errors import EdgeDeeplabError
from runtime.manifest import LOGITS, OUTPUT_CHOICES
from runtime.telemetry import disable_telemetry


def qat_int8(req: ExportRequest, calib_items: Sequence[PreparedImage], overflow_fix: str = OVERFLOW_FIX):
    """Calibrate the torch model with NNCF, fine-tune it with its quantizers in the forward pass,
    and convert it to an OpenVINO model with the PTQ IR's inputs and outputs.

    Returns ``(OpenVINO model, NNCF torch model, details)``: the torch model (its quantizers in
    place, eval mode, normalized float32 in, logits out) is what the fine-tune simulated, for
    scoring against the converted IR; details go into the manifest's calibration record.
    """
    disable_telemetry()
    import nncf
    import torch
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    if req.qat is None:
        raise ValueError("qat_int8 needs a request with qat set")
    nncf.set_log_level(logging.WARNING)
    model = copy.deepcopy(req.model).eval()
    weights = list(model.parameters())  # the checkpoint's parameters, not the quantizers NNCF adds
    normalize = input_normalizer(req)
    calibration = nncf.Dataset(list(calib_items), lambda item: normalize(item.array))
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix))
    ignored = nncf.IgnoredScope(names=output_ops(model, calibration.get_inference_data()), validate=False)
    with _progress_to_stderr(), torch.no_grad():
        model = nncf.quantize(model, calibration, preset=nncf.QuantizationPreset.MIXED,
                              subset_size=len(calib_items), ignored_scope=ignored, advanced_parameters=advanced)
    train_with_frozen_batchnorm(model)
    try:
        result = fine_tune(model, weights, req.qat, req.ignore_index, req.progress)
    finally:
        model.eval()
    ov_model = to_openvino(req, model)
    details = {"toolchain": "nncf torch QAT", "preset": "mixed", "subset_size": len(calib_items),
               "overflow_fix": overflow_fix, "batchnorm": "frozen statistics (eval mode)",
               "dataset": req.qat.spec, "batch_size": req.qat.batch_size, "crop": req.qat.crop,
               **result.as_dict()}
    return ov_model, model, details


def output_ops(model, inputs) -> list[str]:
    """NNCF's names of the operations whose result is a model output (here: the final upsampling
    of the logits), for NNCF to leave unquantized.

    NNCF's torch backend quantizes the input of that last Interpolate (an 8-bit copy of the
    logits, upsampled), while its OpenVINO backend, quantizing the PTQ bundle's IR, does not: no
    quantized operation follows it. Ignoring it gives the QAT IR the PTQ IR's quantizers, one for
    one, and keeps the logits float up to the output.
    """
    import torch
    from nncf.torch.function_hook import wrap_model
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    with torch.no_grad():
        graph = build_nncf_graph(wrap_model(copy.deepcopy(model)), next(iter(inputs)))
    outputs = {node.node_name for node in graph.get_output_nodes()}
    return [node.node_name for node in graph.get_all_nodes()
            if node.node_name not in outputs and graph.get_next_nodes(node)
            and all(n.node_name in outputs for n in graph.get_next_nodes(node))]


def input_normalizer(req: ExportRequest):
    """Prepared input array (1 x 3 x H x W, uint8 or already normalized float32) -> the normalized
    float32 torch tensor the bare model takes, computed as the bundle's graph does
    (:func:`exporters.onnx.deploy_model`: ``(x - 255 mean) * 1 / (255 std)``)."""
    import torch

    if not req.uint8_input:
        return lambda array: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    offset = torch.tensor(req.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    scale = 1.0 / (torch.tensor(req.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
    return lambda array: (torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32) - offset) * scale


def train_with_frozen_batchnorm(model) -> None:
    """Train mode everywhere but BatchNorm, whose running statistics stay the checkpoint's."""
    import torch

    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def to_openvino(req: ExportRequest, model):
    """The fine-tuned NNCF model inside the bundle's wrapper, converted by OpenVINO: input and
    outputs named, typed and shaped as in the IR read from the FP32 ONNX (the runtime finds them
    by name)."""
    import torch

    outputs = OUTPUT_CHOICES[req.outputs]
    wrapper = deploy_model(model, req.uint8_input, outputs, req.mean, req.std)
    dtype = torch.uint8 if req.uint8_input else torch.float32
    example = torch.zeros(1, 3, req.height, req.width, dtype=dtype)
    ov = _ov()
    shape = [-1, 3, -1, -1] if req.dynamic else [1, 3, req.height, req.width]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on NNCF's quantizers and the ArgMax, not actionable
        # Traced here without torch's trace check (a second run of the model compared with the
        # first, 4.5 s of the tiny test model's 8 s trace), which OpenVINO's converter would do.
        traced = torch.jit.trace(wrapper, example, check_trace=False, strict=False)
        converted = ov.convert_model(traced, example_input=example,
                                     input=[(ov.PartialShape(shape), ov.Type.u8 if req.uint8_input else ov.Type.f32)])
    if len(converted.outputs) != len(outputs):
        raise EdgeDeeplabError(f"OpenVINO converted the QAT model with {len(converted.outputs)} outputs, "
                               f"expected {len(outputs)} ({', '.join(outputs)})")
    converted.inputs[0].get_tensor().set_names({INPUT_NAME})
    for port, name in zip(converted.outputs, outputs):
        port.get_tensor().set_names({name})
    return converted


def torch_runner(req: ExportRequest, model) -> Runner:
    """The NNCF torch model (its fake quantization as trained) as a Runner on prepared arrays:
    the simulated accuracy the converted IR is compared with."""
    import torch

    normalize = input_normalizer(req)

    def run(array: np.ndarray) -> Outputs:
        with torch.no_grad():
            return {LOGITS: model(normalize(array)).numpy()}

    return run
