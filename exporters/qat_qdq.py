"""Quantization-aware fine-tuning for the Q/DQ targets (onnxruntime, tensorrt).

The post-training Q/DQ model is the starting point and the end point: :class:`QdqGraph` trains
its weights with every quantizer of the graph in the forward pass (scales frozen), and
:func:`write_tuned` writes the same graph with the new integer weights. So the ONNX Runtime
flavour keeps the placement its fast kernels need, the TensorRT flavour the one
``benchmarks/qdq_placement.py`` shows equal to NVIDIA Model Optimizer's, and both keep their PTQ
latency: only the integers change.

Why not torch's own QAT (``torch.ao``) or Model Optimizer's torch quantization: both put fake
quantization where their own rules say, on a torch graph that is not the one ONNX Runtime's
quantizer or the TensorRT flavour writes, and proving the two placements equal for every backbone
would be a second implementation to keep in step. Training the written graph has nothing to keep
in step. The fake quantization itself is a few lines of torch (round half to even with a
straight-through gradient, saturation), in :mod:`exporters.qdq_torch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from exporters import qdq
from exporters.fine_tune import fine_tune
from exporters.session import ExportSession

Quantize = Callable[[Sequence[str]], Path]


class TunedWeights:
    """The fine-tuned float weights and how to write any Q/DQ graph of this model with them."""

    def __init__(self, values: dict, weight_range: tuple[int, int], work: Path) -> None:
        self.values, self.weight_range, self.work = values, weight_range, work
        self._count = 0

    def apply(self, path: Path) -> Path:
        """``path`` (a Q/DQ or FP32 graph of this model) with the tuned weights, as a new file."""
        from exporters.qdq_torch import write_tuned

        self._count += 1
        return write_tuned(path, self.work / f"{path.stem}_qat{self._count}.onnx", self.values, self.weight_range)


def qat_fine_tune(session: ExportSession, ptq_path: Path, flavor: str) -> tuple[TunedWeights, dict]:
    """Fine-tune the weights of the PTQ model at ``ptq_path``; returns them and the QAT record
    (steps, rate, time, losses, and the simulation's own mIoU on the validation images)."""
    from exporters.qdq_torch import QdqGraph

    req = session.req
    qat = req.qat
    weight_range = qdq.weight_range(flavor)
    graph = QdqGraph(ptq_path, session.fp32_path, weight_range)
    session.step(f"QAT: fine-tuning the INT8 graph's weights for {qat.steps} steps on {qat.spec} "
                 f"(batch {qat.batch_size}, crop {qat.crop}, lr {qat.lr:g}; scales frozen)")
    result = fine_tune(lambda images: graph.logits(images, req.mean, req.std), graph.parameters(), qat,
                       req.ignore_index, req.progress)
    req.log(f"    {result.steps} steps in {result.seconds / 60:.1f} min, loss {result.first_loss:.3f} -> "
            f"{result.last_loss:.3f}")
    record = {**result.as_dict(), "dataset": qat.spec, "batch_size": qat.batch_size, "crop": qat.crop,
              "simulation": "the Q/DQ graph itself, run in torch (exporters.qdq_torch)",
              "weight_range": list(weight_range), "scales": "frozen at calibration"}
    if session.validation is not None:
        graph.eval()
        record["simulated_miou"] = session.score(graph.runner(), "scoring the QAT simulation")
    tuned = TunedWeights(graph.float_weights(), weight_range, session.work)
    return tuned, record
