"""INT8 export: the ONNX Runtime and TensorRT Q/DQ graphs, and the accuracy guard that keeps
layers in float (the OpenVINO path is tests/test_export_openvino.py, QAT tests/test_qat.py).

Split from tests/test_export.py, whose fixtures (the session's tiny checkpoint) it shares.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from runtime.manifest import read_manifest
from test_export import CALIB, SIZE, VAL, _calibration_cache, _int8, checkpoint, onnx_ops  # noqa: F401  (fixtures)


def test_onnxruntime_int8_is_qdq_per_channel_and_recorded(checkpoint, tmp_path):
    out = tmp_path / "ort"
    assert _int8(checkpoint, out, "onnxruntime") == 0
    manifest = read_manifest(out)
    ops = onnx_ops(out / "model.onnx")
    assert ops.count("QuantizeLinear") > 10 and "DequantizeLinear" in ops
    calib = manifest.calibration
    assert calib["images"] == 8 and calib["method"] == "minmax" and calib["excluded"] == []
    assert calib["set"]["covered_classes"] == list(range(7))
    assert calib["settings"]["per_channel"] and calib["settings"]["activation_type"] == "QUInt8"
    assert manifest.verification["vs_fp32"]["argmax_agreement"] >= 0.8
    assert manifest.verification["miou"]["drop_points"] < 5.0
    # Safe by construction on every CPU: 7-bit weights, so no conv's u8 x s8 pair can pass int16.
    kernels = manifest.int8_kernels
    assert calib["settings"]["reduce_range"] and kernels["weight_bits"] == 7 and kernels["runs_exactly_on"] == "any"
    assert kernels["convs_over_int16"] == 0 and kernels["worst_pair_sum"] <= kernels["int16_limit"] == 32767
    assert kernels["gemm_convs"] > 10 and kernels["fused_vs_exact"]["kernels_exact"] is True
    assert 0.9 <= kernels["fused_vs_exact"]["lowest_image"] <= kernels["fused_vs_exact"]["agreement"] <= 1.0
    _assert_weights_within(out / "model.onnx", 64)


def _assert_weights_within(model_path: Path, limit: int) -> None:
    """Every int8 conv weight the bundle stores is at most ``limit`` in magnitude (read from the file,
    not from the exporter's record)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    weights = [numpy_helper.to_array(t) for t in onnx.load(str(model_path)).graph.initializer
               if t.data_type == TensorProto.INT8 and len(t.dims) == 4]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= limit


def test_tensorrt_qdq_runs_in_onnxruntime_and_scores_like_the_ort_int8_model(checkpoint, tmp_path):
    import onnx

    from exporters import qdq

    ort_out, trt_out = tmp_path / "ort", tmp_path / "trt"
    assert _int8(checkpoint, ort_out, "onnxruntime") == 0
    assert _int8(checkpoint, trt_out, "tensorrt") == 0
    trt, ort = read_manifest(trt_out), read_manifest(ort_out)
    # The calibration ranges were computed once and reused for the second target.
    assert trt.calibration["ranges_key"] == ort.calibration["ranges_key"] and trt.calibration["ranges_cached"]
    graph = onnx.load(str(trt_out / "model.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}
    ops = [n.op_type for n in graph.node]
    # TensorRT placement (Model Optimizer's on this model): Q/DQ on every conv's data and weight
    # inputs, on one input of each residual Add (shared with the conv reading the same tensor), on
    # the pooling branch's ReduceMean (shared) and on the two upsampling Resizes; the Resize of the
    # logits (the last node) reads the classifier conv directly; no op's output is quantized for
    # its own sake.
    assert qdq.qdq_fed_inputs(trt_out / "model.onnx") == {
        "Add": ops.count("Add"), "Conv data": ops.count("Conv"), "Conv weight": ops.count("Conv"),
        "ReduceMean": 1, "Resize": 2}
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert len(resizes) == 3 and producer[resizes[-1].input[0]].op_type == "Conv"
    assert [producer[r.input[0]].op_type for r in resizes[:2]] == ["DequantizeLinear"] * 2
    assert trt.calibration["settings"]["op_types_to_quantize"] == ["Conv", "Resize", "MaxPool"]
    inits = {t.name: t for t in graph.initializer}
    for q in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        zero = onnx.numpy_helper.to_array(inits[q.input[2]])
        assert zero.dtype == np.int8 and not zero.any()
    assert "--int8" in trt.extra["trtexec"] and "--fp16" in trt.extra["trtexec"]
    assert (trt_out / "README.txt").read_text().count("trtexec") == 1
    # It runs in ONNX Runtime close to FP32 (its exact Q/DQ semantics, as TensorRT computes it: the
    # same on every CPU), and both INT8 models score alike on the validation images.
    assert trt.verification["vs_fp32"]["argmax_agreement"] >= 0.93
    assert abs(trt.verification["miou"]["int8"] - ort.verification["miou"]["int8"]) * 100 < 5.0


def test_tensorrt_qdq_on_resnet_quantizes_maxpool_and_projection_shortcuts(tmp_path):
    """ResNet adds what MobileNetV2 lacks: a MaxPool, and residual Adds of two conv outputs (the
    first block of each stage), where the shortcut (projection conv) input gets its own Q/DQ pair."""
    import onnx
    import torch

    from calibration.ranges import compute_ranges
    from edge_deeplab.models import ModelConfig, build_model
    from exporters import qdq
    from exporters.onnx import export_onnx
    from exporters.verify import compare, ort_runner

    torch.manual_seed(0)
    model = build_model(ModelConfig("resnet50", 3, 16))
    fp32 = export_onnx(model, tmp_path / "r50.onnx", 65, 65)
    arrays = [np.random.default_rng(i).standard_normal((1, 3, 65, 65)).astype(np.float32) for i in range(3)]
    ranges = compute_ranges(fp32, "image", arrays, "minmax", "r50-test", tmp_path / "cache")
    int8 = qdq.quantize(fp32, tmp_path / "q.onnx", ranges, "tensorrt")
    graph = onnx.load(str(int8)).graph
    producer = {o: n for n in graph.node for o in n.output}
    ops = [n.op_type for n in graph.node]
    assert qdq.qdq_fed_inputs(int8) == {"Add": 16, "Conv data": ops.count("Conv"), "Conv weight": ops.count("Conv"),
                                        "MaxPool": 1, "ReduceMean": 1, "Resize": 2}
    projections = [n for n in graph.node if n.op_type == "Add" and n.input[1].endswith("_residual_dq")]
    assert len(projections) == 4  # layer1..layer4 block 0: conv3 + downsample conv
    readers = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    for add in projections:
        # The quantized input is the shortcut: a conv reading the block's input, which the block's
        # first conv (and, for layer1's output, the decoder) reads too; the other input is the
        # block's last conv, reading its own ReLU.
        shortcut = producer[producer[producer[add.input[1]].input[0]].input[0]]
        main = producer[add.input[0]]
        assert shortcut.op_type == main.op_type == "Conv"
        assert readers[shortcut.input[0]].count("Conv") >= 2 and readers[main.input[0]] == ["Conv"]
    run, reference = ort_runner(int8), ort_runner(fp32)
    assert compare([reference(a) for a in arrays], [run(a) for a in arrays]).argmax_agreement > 0.9
    # A shortcut conv kept in float by the accuracy guard keeps its output float too.
    kept = producer[producer[producer[projections[0].input[1]].input[0]].input[0]].name
    partial = qdq.quantize(fp32, tmp_path / "p.onnx", ranges, "tensorrt", exclude=[kept])
    assert qdq.qdq_fed_inputs(partial)["Add"] == 15


def test_accuracy_guard_keeps_sensitive_layers_in_float(checkpoint, tmp_path, capsys):
    out = tmp_path / "guard"
    # A limit below zero cannot be met by a plain quantization (on this model an INT8 mIoU above
    # FP32 is impossible to count on), so the guard must start excluding layers; it fails only if
    # even all-float layers cannot meet it, which then says so in one line.
    capsys.readouterr()
    code = _int8(checkpoint, out, "onnxruntime", "--max-drop", "0")
    err = capsys.readouterr().err  # captured: the step lines, no progress bar drawn
    assert "\r" not in err and "img/s" not in err and "s/img" not in err
    assert "[1] exporting FP32 ONNX" in err and "accuracy guard" in err
    if code == 0:
        calib = read_manifest(out).calibration
        assert calib["max_drop_points"] == 0 and calib["measured"]["drop_points"] <= 0
        assert calib["guard_steps"][0]["excluded"] == 0
        if calib["guard_steps"][0]["drop_points"] > 0:
            assert calib["excluded"] and calib["sensitivity"]
    else:
        assert code == 2 and not out.exists()


def test_accuracy_guard_ranks_a_broken_layer_first_and_keeping_it_float_removes_its_noise(checkpoint, tmp_path):
    """One conv's input range is made 100x too wide (about 7 of its 8 bits lost): the SQNR ranking
    must put that conv first, and keeping it in float must remove its noise, its input quantizer
    included (ONNX Runtime's quantizer leaves that in place for the producer's sake;
    exporters.qdq_float takes it out). A broken layer, not the top half of an honest ranking: on
    this barely trained model relative noise is 6-9 dB deep in the backbone and grows chaotically,
    so which half of the layers to keep float for the least logit error differs between machines'
    float rounding; a range off by 100x does not."""
    import dataclasses

    import onnx
    from calibration.inputs import InputSpecLite, prepare_samples
    from calibration.ranges import compute_ranges
    from edge_deeplab.checkpoint import load_checkpoint
    from edge_deeplab.data.base import open_dataset
    from exporters import qdq
    from exporters.onnx import export_onnx
    from exporters.sensitivity import rank_layers
    from exporters.verify import ort_runner

    fp32 = export_onnx(load_checkpoint(checkpoint).build_model(16), tmp_path / "f.onnx", 65, 65, outputs=("logits",))
    data = open_dataset(CALIB, "train")
    spec = InputSpecLite(65, 65, "float32", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    arrays = [i.array for i in prepare_samples(data, range(6), spec)]
    ranges = compute_ranges(fp32, "image", arrays, "minmax", "test-set", tmp_path / "cache")
    # The victim: a depthwise conv in the middle of the backbone reading a ReLU6 output, which the
    # cpu flavour folds into the quantizer (so its float input needs the activation back).
    graph = onnx.load(str(fp32)).graph
    producer = {o: n for n in graph.node for o in n.output}
    readers = Counter(i for n in graph.node for i in n.input)
    candidates = [n for n in graph.node if n.op_type == "Conv" and readers[n.input[0]] == 1
                  and n.input[0] in producer and producer[n.input[0]].op_type == "Clip"]
    victim = candidates[len(candidates) // 2]
    table = json.loads(ranges.path.read_text())
    for bound in ("lowest", "highest"):
        table["data"][victim.input[0]][bound]["data"] = [v * 100 for v in table["data"][victim.input[0]][bound]["data"]]
    (tmp_path / "wide.json").write_text(json.dumps(table))
    wide = dataclasses.replace(ranges, path=tmp_path / "wide.json", key="wide")

    full = qdq.quantize(fp32, tmp_path / "q.onnx", wide, "cpu")
    ranking = rank_layers(fp32, full, arrays[:3])
    assert len(ranking) == len(qdq.quantized_convs(full)) > 20
    assert all(a.added_noise >= b.added_noise for a, b in zip(ranking, ranking[1:]))
    assert ranking[0].node == victim.name
    partial = qdq.quantize(fp32, tmp_path / "p.onnx", wide, "cpu", exclude=[victim.name])
    assert victim.name not in qdq.quantized_convs(partial)
    kept = onnx.load(str(partial)).graph
    kept_producer = {o: n for n in kept.node for o in n.output}
    conv = next(n for n in kept.node if n.name == victim.name)
    assert kept_producer[conv.input[0]].op_type == "Clip"  # the ReLU6 back, in float, not a DequantizeLinear
    reference = np.concatenate([ort_runner(fp32)(a)["logits"] for a in arrays])

    def error(path) -> float:
        return float(np.mean((np.concatenate([ort_runner(path)(a)["logits"] for a in arrays]) - reference) ** 2))

    honest = error(qdq.quantize(fp32, tmp_path / "h.onnx", ranges, "cpu"))
    # Measured here for this victim: 0.36 (partial), 1.7 (full), 0.32 (honest); with each of the
    # 20 such convs as the victim, it ranked first every time and partial/honest was 0.92-1.20.
    # An exclusion that left the input quantizer in place kept the full model's error.
    assert error(full) > 2 * honest and error(partial) < 1.5 * honest


def test_guard_exclusion_schedule():
    from exporters.guard import exclusion_counts

    assert exclusion_counts(0) == [0]
    assert exclusion_counts(5) == [0, 1, 2, 4, 5]
    assert exclusion_counts(8) == [0, 1, 2, 4, 8]
