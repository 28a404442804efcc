"""INT8 that computes the same sums on every CPU: the 16-bit pair saturation of x86 without VNNI,
emulated in numpy (this machine may well have VNNI), the bound the exporter records, the CPU
features the runtime reads, and what the runtime and ``doctor`` say about a bundle on a CPU.

Nothing here depends on which integer kernels the machine running the tests has: the kernels of
an AVX2-only CPU are emulated, and CPUs are described by ``CpuInfo`` values, not probed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_deeplab.doctor import disagreement_cause, min_agreement
from exporters.saturation import (INT16_MAX, emulate_pairwise, im2col_nhwc, weights_as_gemm, worst_pair)
from runtime.cpu import CpuInfo, int8_saturation_warning, parse_cpuinfo
from runtime.errors import BundleError
from runtime.manifest import InputSpec, Manifest, read_manifest
from test_runtime_bundles import pixel_bundle  # noqa: F401  (a fixture)

AVX2_ONLY = CpuInfo("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "x86_64", ("AVX2",))
SKYLAKE_X = CpuInfo("Intel(R) Xeon(R) Gold 6130", "x86_64", ("AVX2", "AVX-512"))
VNNI = CpuInfo("Intel(R) Xeon(R) Gold 6230", "x86_64", ("AVX2", "AVX-512", "AVX512-VNNI"))
ALDER_LAKE = CpuInfo("12th Gen Intel(R) Core(TM) i5-1235U", "x86_64", ("AVX2", "AVX-VNNI"))
ORIN = CpuInfo("ARMv8 Processor rev 1 (v8l)", "aarch64", ("dotprod",))
UNKNOWN = CpuInfo("unknown CPU", "x86_64", (), known=False)


def quantized_conv(bits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A post-ReLU u8 activation (1 x 32 x 8 x 8) and a 3x3 conv's weights (16 x 32 x 3 x 3) quantized
    per output channel, symmetric, to ``bits`` as ONNX Runtime's quantizer does (|w| <= 127 or 64)."""
    rng = np.random.default_rng(seed)
    activation = np.clip(rng.gamma(2.0, 60.0, (1, 32, 8, 8)), 0, 255).round().astype(np.uint8)
    weights = rng.normal(0, 1, (16, 32, 3, 3)).astype(np.float32)
    limit = {8: 127, 7: 64}[bits]
    scale = np.abs(weights).reshape(16, -1).max(axis=1) / limit
    return activation, np.round(weights / scale[:, None, None, None]).astype(np.int8)


@pytest.mark.parametrize("bits", [8, 7])
def test_emulated_avx2_kernel_saturates_8bit_weights_and_not_7bit(bits):
    activation, weights = quantized_conv(bits)
    rows, matrix = im2col_nhwc(activation, (3, 3), pad=1), weights_as_gemm(weights)
    exact = rows.astype(np.int64) @ matrix.astype(np.int64)
    emulated = emulate_pairwise(rows, matrix)
    if bits == 8:  # today's full-range weights: many sums clipped, some by thousands
        wrong = emulated != exact
        assert wrong.mean() > 0.05 and np.abs(emulated - exact).max() > 1000
        assert worst_pair(weights.reshape(16, -1)) > INT16_MAX
    else:  # the default: every sum exact, and the bound says so without looking at activations
        np.testing.assert_array_equal(emulated, exact)
        assert worst_pair(weights.reshape(16, -1)) <= INT16_MAX


def test_emulation_is_exact_when_no_pair_can_saturate():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (50, 33), dtype=np.uint8)  # odd K: the kernels pad a zero
    w = rng.integers(-20, 21, (33, 7)).astype(np.int8)
    np.testing.assert_array_equal(emulate_pairwise(a, w), a.astype(np.int32) @ w.astype(np.int32))


def test_worst_pair_bounds_every_pairing_and_is_reached():
    rng = np.random.default_rng(2)
    for _ in range(20):
        w = rng.integers(-128, 128, (4, 10)).astype(np.int64)
        bound = worst_pair(w)
        # Every pair with the activations that push it furthest stays within the bound ...
        for row in w:
            for i in range(10):
                for j in range(i + 1, 10):
                    high = 255 * (max(row[i], 0) + max(row[j], 0))
                    low = 255 * (min(row[i], 0) + min(row[j], 0))
                    assert high <= bound and -low <= bound
        # ... and the bound is a pair some activations reach: it is not loose.
        ordered = np.sort(w, axis=1)
        assert bound == 255 * max((ordered[:, -1] + ordered[:, -2]).clip(0).max(), -(ordered[:, 0] + ordered[:, 1]).clip(None, 0).min())
    # Any 7-bit weights at all are safe: 255 x 64 x 2 = 32,640.
    assert worst_pair(np.full((1, 4), 64)) == 32640 == worst_pair(np.full((1, 4), -64)) <= INT16_MAX


# -- the CPU -------------------------------------------------------------------------------------

def test_cpuinfo_reads_x86_and_arm_features():
    haswell = parse_cpuinfo("processor\t: 0\nmodel name\t: Intel(R) Core(TM) i7-4770\nflags\t\t: fpu sse avx avx2 fma\n",
                            "x86_64")
    assert haswell.features == ("AVX2",) and haswell.model == "Intel(R) Core(TM) i7-4770"
    assert haswell.int8_pairs_saturate is True and "16 bits" in haswell.describe_int8()
    sapphire = parse_cpuinfo("model name: Xeon\nflags: avx2 avx512f avx512_vnni amx_int8 amx_tile\n", "x86_64")
    assert sapphire.features == ("AVX2", "AVX-512", "AVX512-VNNI", "AMX-INT8") and sapphire.int8_pairs_saturate is False
    assert parse_cpuinfo("flags: avx2 avx_vnni\n", "x86_64").int8_pairs_saturate is False
    assert parse_cpuinfo("flags: avx2 avx512f avx512bw\n", "x86_64").int8_pairs_saturate is True  # Skylake-X
    orin = parse_cpuinfo("processor: 0\nFeatures: fp asimd evtstrm aes crc32 atomics asimddp\nCPU part: 0xd42\n", "aarch64")
    assert orin.features == ("dotprod",) and orin.int8_pairs_saturate is False
    pi4 = parse_cpuinfo("Features: fp asimd evtstrm crc32 cpuid\nHardware: BCM2835\n", "aarch64")
    assert pi4.features == () and pi4.int8_pairs_saturate is False and pi4.model == "BCM2835"
    assert parse_cpuinfo("", "x86_64").int8_pairs_saturate is None  # nothing readable: unknown, not safe


# -- what the runtime says when a bundle runs on a CPU --------------------------------------------

def ort_int8(int8_kernels=None, settings=None) -> Manifest:
    return Manifest(target="onnxruntime", precision="int8", files={"model": "model.onnx"}, input=InputSpec(),
                    classes=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]], mean=[0.5] * 3, std=[0.2] * 3,
                    calibration={"settings": settings or {}}, int8_kernels=int8_kernels)


SAFE = {"weight_bits": 7, "runs_exactly_on": "any", "convs_over_int16": 0,
        "fused_vs_exact": {"agreement": 0.996, "lowest_image": 0.981, "images": 12, "cpu": "x", "kernels_exact": True}}
NEEDS_VNNI = {"weight_bits": 8, "runs_exactly_on": "vnni", "convs_over_int16": 41}


def test_a_7bit_bundle_runs_silently_everywhere():
    for cpu in (AVX2_ONLY, SKYLAKE_X, VNNI, ALDER_LAKE, ORIN, UNKNOWN):
        assert int8_saturation_warning(ort_int8(SAFE), "b", cpu) is None


def test_an_8bit_bundle_warns_once_per_cpu_without_vnni_naming_cause_and_fix():
    for cpu in (VNNI, ALDER_LAKE, ORIN):
        assert int8_saturation_warning(ort_int8(NEEDS_VNNI), "b", cpu) is None
    for cpu in (AVX2_ONLY, SKYLAKE_X):
        line = int8_saturation_warning(ort_int8(NEEDS_VNNI), "bundles/x", cpu)
        assert "\n" not in line and "41 convs" in line and "no VNNI" in line and cpu.model in line
        assert "mIoU point" in line and "re-export" in line and "7-bit" in line
    assert "could not be read" in int8_saturation_warning(ort_int8(NEEDS_VNNI), "b", UNKNOWN)


def test_openvino_int8_is_exact_everywhere_only_with_the_overflow_fix_on_every_conv():
    def ov_int8(fix: str | None) -> Manifest:
        manifest = ort_int8(settings={})
        manifest.target, manifest.calibration = "openvino", {"toolchain": "nncf", "overflow_fix": fix}
        return manifest

    assert int8_saturation_warning(ov_int8("enable"), "b", AVX2_ONLY) is None
    for fix in ("first_layer_only", None):  # NNCF's default, and bundles from before it was recorded
        assert "overflow fix" in int8_saturation_warning(ov_int8(fix), "b", SKYLAKE_X)
        assert int8_saturation_warning(ov_int8(fix), "b", VNNI) is None


def test_bundles_from_before_the_record_are_judged_by_their_quantizer_settings():
    old_8bit, old_7bit = ort_int8(settings={"reduce_range": False}), ort_int8(settings={"reduce_range": True})
    assert "made before" in int8_saturation_warning(old_8bit, "b", AVX2_ONLY)
    assert int8_saturation_warning(old_8bit, "b", VNNI) is None
    assert int8_saturation_warning(old_7bit, "b", AVX2_ONLY) is None


def test_doctor_expects_what_the_export_measured_and_names_the_real_cause():
    assert min_agreement(ort_int8(SAFE)) == 0.971  # the export's lowest image on exact kernels, less the margin
    assert min_agreement(ort_int8({**SAFE, "fused_vs_exact": {**SAFE["fused_vs_exact"], "lowest_image": 1.0}})) == 0.99
    assert min_agreement(ort_int8(NEEDS_VNNI)) == 0.99  # no exact-kernel measurement recorded: near 1
    cause, fix = disagreement_cause(ort_int8(NEEDS_VNNI), Path("b"), AVX2_ONLY)
    assert cause.startswith("this CPU's integer kernels") and "no VNNI" in cause
    assert "re-export" in fix and "7-bit" in fix
    cause, fix = disagreement_cause(ort_int8(NEEDS_VNNI), Path("b"), VNNI)
    assert cause.startswith("the model, not this CPU") and "--max-drop" in fix and "evaluate" in fix
    cause, _ = disagreement_cause(ort_int8(SAFE), Path("b"), AVX2_ONLY)
    assert cause.startswith("the model, not this CPU") and "7-bit" in cause


# -- the record in model.json ---------------------------------------------------------------------

@pytest.mark.parametrize("record, message", [
    ({"weight_bits": 8, "runs_exactly_on": "avx9"}, '"int8_kernels.runs_exactly_on" must be one of any, vnni'),
    ({"runs_exactly_on": "any", "weight_bits": "seven"}, '"int8_kernels.weight_bits" must be an integer'),
    ({"runs_exactly_on": "any", "weight_bits": 12}, '"int8_kernels.weight_bits" must be 2-8'),
    ({"runs_exactly_on": "any", "fused_vs_exact": {"agreement": 7}}, "agreement\" must be a number 0-1"),
    ({"runs_exactly_on": "any", "fused_vs_exact": {"agreement": 0.9, "lowest_image": "x"}}, "lowest_image\" must be"),
    ("vnni", '"int8_kernels" must be an object or null'),
])
def test_a_malformed_int8_record_is_one_line(pixel_bundle, tmp_path, record, message):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(pixel_bundle, bundle)
    data = json.loads((bundle / "model.json").read_text())
    data["int8_kernels"] = record
    (bundle / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError) as err:
        read_manifest(bundle)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_schema_2_manifest_without_the_record_still_reads(pixel_bundle, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(pixel_bundle, bundle)
    data = json.loads((bundle / "model.json").read_text())
    data.pop("int8_kernels", None)
    data["schema_version"] = 2
    (bundle / "model.json").write_text(json.dumps(data))
    assert read_manifest(bundle).int8_kernels is None


def test_an_isa_cap_in_the_environment_is_warned_about_once_for_openvino(monkeypatch, capsys):
    """ONEDNN_MAX_CPU_ISA is how torch is timed on its AVX2 paths; OpenVINO's CPU plugin reads it
    too and computed garbage INT8 masks with it on an AVX-512 VNNI CPU, so loading OpenVINO says so."""
    import runtime.cpu as cpu

    monkeypatch.setattr(cpu, "_WARNED", set())
    for name in cpu.ISA_CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    cpu.warn_if_isa_capped()
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    cpu.warn_if_isa_capped()
    cpu.warn_if_isa_capped()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-deeplab: warning: ONEDNN_MAX_CPU_ISA=AVX2 is set: OpenVINO")
    assert "unset it for OpenVINO" in lines[0]
