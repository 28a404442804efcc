"""TensorRT: build settings, trtexec lines and engine cache decisions run everywhere; building and
running an engine need TensorRT and a GPU (those tests skip, saying so, where it does not import)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.backends.cuda_runtime import CUDA_PYTHON_REQUIREMENT, cuda_python_problem, cuda_python_version, import_cudart
from runtime.backends.tensorrt_build import BuildSettings, bundle_settings
from runtime.backends.tensorrt_engines import (
    DeviceIdentity,
    default_cache_dir,
    engine_file_name,
    plan_engine,
    profile_shapes,
)
from runtime.errors import BundleError
from runtime.manifest import read_manifest, write_manifest
from test_runtime_bundles import blocks_image, build_bundle, expected_pixel_mask

ORIN = DeviceIdentity("Orin (nvgpu)", "8.7", "10.3.0")
XAVIER = DeviceIdentity("Xavier", "7.2", "8.5.2")
INT8 = BuildSettings("int8", "image")
DYNAMIC = ((1, 3, 33, 33), (1, 3, 65, 65), (1, 3, 130, 130))


@pytest.fixture(scope="module")
def trt_bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("trt") / "pixel", target="tensorrt", precision="fp16")


def test_settings_give_the_builder_flags_and_the_same_trtexec_line() -> None:
    assert BuildSettings("fp32", "image").builder_flags() == []
    assert BuildSettings("fp16", "image").builder_flags() == ["FP16"]
    assert INT8.builder_flags() == ["INT8", "FP16"]
    assert BuildSettings("int8", "image", fp16_with_int8=False).builder_flags() == ["INT8"]
    assert INT8.trtexec_command("model.onnx") == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --timingCacheFile=timing.cache "
        "--memPoolSize=workspace:1024M --int8 --fp16")
    dynamic = BuildSettings("fp16", "image", DYNAMIC, workspace_mb=2048).trtexec_args("m.onnx")
    assert dynamic[4:] == ["--memPoolSize=workspace:2048M", "--fp16", "--minShapes=image:1x3x33x33",
                           "--optShapes=image:1x3x65x65", "--maxShapes=image:1x3x130x130"]
    with pytest.raises(runtime.EdgeDeeplabError, match="precision"):
        BuildSettings("int4", "image")


def test_runtime_reads_back_the_settings_the_bundle_records(trt_bundle: Path) -> None:
    manifest = read_manifest(trt_bundle)
    assert bundle_settings(manifest, None) == BuildSettings("fp16", "image")  # nothing recorded: defaults
    manifest.extra["tensorrt_build"] = {"builder_flags": ["FP16"], "workspace_mb": 512, "fp16_with_int8": True}
    assert bundle_settings(manifest, DYNAMIC).workspace_mb == 512
    assert bundle_settings(manifest, DYNAMIC, workspace_mb=256).workspace_mb == 256  # an explicit option wins
    manifest.extra["tensorrt_build"] = "2048"
    with pytest.raises(BundleError, match="tensorrt_build"):
        bundle_settings(manifest, None)


def test_engine_names_separate_gpu_trt_precision_model_and_settings() -> None:
    a = engine_file_name(ORIN, INT8, "ab" * 32)
    assert a == f"orin-nvgpu-sm87-trt10.3.0-int8-abababababab-{INT8.key()}.engine"
    names = {a, engine_file_name(XAVIER, INT8, "ab" * 32), engine_file_name(ORIN, BuildSettings("fp16", "image"), "ab" * 32),
             engine_file_name(ORIN, INT8, "cd" * 32), engine_file_name(ORIN, BuildSettings("int8", "image", DYNAMIC), "ab" * 32),
             engine_file_name(ORIN, BuildSettings("int8", "image", workspace_mb=64), "ab" * 32)}
    assert len(names) == 6


def test_first_load_builds_then_uses_the_cache(trt_bundle: Path, tmp_path: Path) -> None:
    manifest = read_manifest(trt_bundle)
    settings = bundle_settings(manifest, DYNAMIC)
    plan = plan_engine(manifest, trt_bundle, ORIN, tmp_path, settings)
    assert plan.candidates == [] and plan.onnx_path == trt_bundle / "model.onnx"
    assert plan.build_path.parent == tmp_path and plan.timing_cache_path.name == "timing-orin-nvgpu-sm87-trt10.3.0.cache"
    assert plan.build_message(ORIN) == (f"building a TensorRT engine for Orin (nvgpu) (sm 8.7, TensorRT 10.3.0) from "
                                        f"model.onnx (no engine for it yet); it is cached as {plan.build_path}")
    plan.build_path.write_bytes(b"engine")
    assert plan_engine(manifest, trt_bundle, ORIN, tmp_path, settings).candidates == [plan.build_path]
    # Another GPU or TensorRT version, or other build settings, do not see this engine: they get their own build.
    other = plan_engine(manifest, trt_bundle, XAVIER, tmp_path, settings)
    assert other.candidates == [] and other.build_path != plan.build_path
    assert plan_engine(manifest, trt_bundle, ORIN, tmp_path, bundle_settings(manifest, None)).candidates == []


def test_shipped_engine_from_another_device_is_rebuilt_with_one_line(trt_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "shipped"
    shutil.copytree(trt_bundle, bundle)
    (bundle / "model.engine").write_bytes(b"engine built elsewhere")
    manifest = read_manifest(bundle)
    manifest.files["engine"] = "model.engine"
    manifest.extra["engine_built_for"] = XAVIER.as_dict()
    write_manifest(bundle, manifest)
    manifest = read_manifest(bundle)
    settings = bundle_settings(manifest, None)
    assert plan_engine(manifest, bundle, XAVIER, tmp_path / "c", settings).candidates == [bundle / "model.engine"]
    rebuild = plan_engine(manifest, bundle, ORIN, tmp_path / "c", settings)
    assert rebuild.candidates == [] and rebuild.onnx_path is not None  # rebuilt from the ONNX, never deserialized
    message = rebuild.build_message(ORIN)
    assert "\n" not in message and "built for Xavier (sm 7.2, TensorRT 8.5.2)" in message and "for Orin" in message
    # An engine that does not say which GPU built it is rebuilt too while the ONNX is there.
    manifest.extra = {"engine_tensorrt_version": "10.3.0"}
    unknown = plan_engine(manifest, bundle, ORIN, tmp_path / "c", settings)
    assert unknown.candidates == [] and "does not record the GPU" in unknown.build_message(ORIN)
    assert "TensorRT 10.3.0" in plan_engine(manifest, bundle, XAVIER, tmp_path / "c", settings).build_message(XAVIER)
    # Without the ONNX there is nothing to rebuild from: one clear error naming both devices.
    manifest.extra["engine_built_for"] = XAVIER.as_dict()
    manifest.files = {"model": "model.engine", "engine": "model.engine"}
    no_onnx = plan_engine(manifest, bundle, ORIN, tmp_path / "c", settings)
    assert no_onnx.build_path is None and no_onnx.candidates == []
    message = str(no_onnx.failure(ORIN))
    assert "Xavier" in message and "Orin" in message and "10.3.0" in message and "no ONNX" in message
    # ... and an engine of unknown origin is then tried: deserialization decides.
    manifest.extra = {}
    assert plan_engine(manifest, bundle, ORIN, tmp_path / "c", settings).candidates == [bundle / "model.engine"]


def test_cuda_python_must_be_the_12x_line_jetpack_6_runs() -> None:
    assert CUDA_PYTHON_REQUIREMENT == ">=12.6,<13"
    assert cuda_python_problem("12.6.2.post1") is None and cuda_python_problem("12.9.0") is None
    for version in ("13.0.1", "12.2.0", None):
        assert ">=12.6,<13" in cuda_python_problem(version)
    if cuda_python_version() is None:  # this machine: the import fails with the version it needs
        with pytest.raises(runtime.EdgeDeeplabError, match=r"cuda-python>=12\.6,<13"):
            import_cudart()


def test_profile_shapes() -> None:
    assert profile_shapes([1, 3, 512, 512], 1024) is None
    low, opt, high = profile_shapes([1, 3, None, None], 1024)
    assert low == (1, 3, 32, 32) and opt == (1, 3, 512, 512) and high == (1, 3, 1024, 1024)
    assert profile_shapes([None, 3, 360, None], 640)[2] == (8, 3, 360, 640)
    recorded = {"min": [1, 3, 128, 128], "opt": [1, 3, 513, 513], "max": [1, 3, 1026, 1026]}
    assert profile_shapes([1, 3, None, None], 1024, recorded) == ((1, 3, 128, 128), (1, 3, 513, 513), (1, 3, 1026, 1026))


def test_engine_cache_location(tmp_path: Path, monkeypatch) -> None:
    bundle = tmp_path / "ro"
    bundle.mkdir()
    assert default_cache_dir(bundle) == bundle / "engines"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle.chmod(0o555)
    try:
        if os.access(bundle, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        assert default_cache_dir(bundle) == tmp_path / "cache" / "edge-deeplab" / "engines" / "ro"
    finally:
        bundle.chmod(0o755)


def test_missing_tensorrt_is_a_clear_error(trt_bundle: Path) -> None:
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        # On a host without TensorRT, pip cannot help: the bundle runs on the Jetson.
        with pytest.raises(runtime.EdgeDeeplabError, match=r"is a tensorrt bundle: it runs on the Jetson") as error:
            runtime.load(trt_bundle)
        assert "pip install" not in str(error.value)
    else:
        pytest.skip("tensorrt is installed here; the missing-package path cannot be exercised")


def test_tensorrt_builds_caches_and_runs(trt_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT (and an NVIDIA GPU) are not available on this machine")
    cache = tmp_path / "engines"
    image = blocks_image(40, 56, seed=3)
    with runtime.load(trt_bundle, engine_cache_dir=cache) as seg:
        agreement = (seg.predict(image) == expected_pixel_mask(image)).mean()
    assert agreement > 0.95  # fp16
    engines = list(cache.glob("*.engine"))
    assert len(engines) == 1 and list(cache.glob("timing-*.cache"))
    stamp = engines[0].stat().st_mtime_ns
    with runtime.load(trt_bundle, engine_cache_dir=cache) as seg:  # second load: no rebuild
        assert seg.predict(image).shape == (40, 56)
    assert engines[0].stat().st_mtime_ns == stamp
    # A foreign or damaged engine in the cache is rebuilt, not trusted.
    engines[0].write_bytes(b"garbage")
    with runtime.load(trt_bundle, engine_cache_dir=cache) as seg:
        assert np.asarray(seg.predict(image)).shape == (40, 56)
    assert engines[0].read_bytes() != b"garbage"
