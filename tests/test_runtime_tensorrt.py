"""TensorRT: the engine cache decisions run everywhere; building and running need TensorRT + a GPU."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime
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


@pytest.fixture(scope="module")
def trt_bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("trt") / "pixel", target="tensorrt", precision="fp16")


def test_engine_names_separate_gpu_trt_precision_and_model() -> None:
    a = engine_file_name(ORIN, "int8", "ab" * 32)
    assert a == "orin-nvgpu-sm87-trt10.3.0-int8-abababababab.engine"
    assert len({a, engine_file_name(XAVIER, "int8", "ab" * 32), engine_file_name(ORIN, "fp16", "ab" * 32),
                engine_file_name(ORIN, "int8", "cd" * 32)}) == 4


def test_first_load_builds_then_uses_the_cache(trt_bundle: Path, tmp_path: Path) -> None:
    manifest = read_manifest(trt_bundle)
    plan = plan_engine(manifest, trt_bundle, ORIN, tmp_path)
    assert plan.candidates == [] and plan.onnx_path == trt_bundle / "model.onnx"
    assert plan.build_path.parent == tmp_path and plan.timing_cache_path.name == "timing-orin-nvgpu-sm87-trt10.3.0.cache"
    plan.build_path.write_bytes(b"engine")
    assert plan_engine(manifest, trt_bundle, ORIN, tmp_path).candidates == [plan.build_path]
    # Another GPU or TensorRT version does not see this engine: it gets its own build.
    other = plan_engine(manifest, trt_bundle, XAVIER, tmp_path)
    assert other.candidates == [] and other.build_path != plan.build_path


def test_shipped_engine_from_another_device(trt_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "shipped"
    shutil.copytree(trt_bundle, bundle)
    (bundle / "model.engine").write_bytes(b"engine built elsewhere")
    manifest = read_manifest(bundle)
    manifest.files["engine"] = "model.engine"
    manifest.extra["engine_built_for"] = XAVIER.as_dict()
    write_manifest(bundle, manifest)
    manifest = read_manifest(bundle)
    assert plan_engine(manifest, bundle, XAVIER, tmp_path / "c").candidates == [bundle / "model.engine"]
    rebuild = plan_engine(manifest, bundle, ORIN, tmp_path / "c")
    assert rebuild.candidates == [] and rebuild.onnx_path is not None  # rebuilt from the ONNX
    # The exporter records only the TensorRT version; a different one means rebuild too.
    manifest.extra = {"engine_tensorrt_version": "10.3.0"}
    assert plan_engine(manifest, bundle, ORIN, tmp_path / "c").candidates == [bundle / "model.engine"]
    assert plan_engine(manifest, bundle, XAVIER, tmp_path / "c").candidates == []
    manifest.extra["engine_built_for"] = XAVIER.as_dict()
    # Without the ONNX there is nothing to rebuild from: one clear error naming both devices.
    manifest.files = {"model": "model.engine", "engine": "model.engine"}
    no_onnx = plan_engine(manifest, bundle, ORIN, tmp_path / "c")
    assert no_onnx.build_path is None
    message = str(no_onnx.failure(ORIN))
    assert "Xavier" in message and "Orin" in message and "10.3.0" in message and "no ONNX" in message


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
        with pytest.raises(runtime.EdgeDeeplabError, match=r"needs the tensorrt package.*edge-deeplab\[tensorrt\]"):
            runtime.load(trt_bundle)
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
