"""TensorRT 10 backend (target ``tensorrt``): deserialize or build an engine, run it through cuda-python.

The bundle carries an ONNX (with explicit Q/DQ pairs for INT8, so no calibrator is involved); the
first load on a device builds the engine with :func:`runtime.backends.tensorrt_build.build_engine`
(the same settings as the bundle's trtexec line) and caches it per GPU and TensorRT version (see
:mod:`runtime.backends.tensorrt_engines`). Device memory is managed with cuda-python's runtime
bindings, which is the only extra dependency (no PyCUDA, no torch).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np

from runtime.backends.base import Backend
from runtime.backends.cuda_runtime import cuda_call as _cuda_call
from runtime.backends.cuda_runtime import gpu_name_and_capability, import_cudart
from runtime.backends.tensorrt_build import bundle_settings, build_engine, trt_logger
from runtime.backends.tensorrt_engines import DeviceIdentity, default_cache_dir, plan_engine, profile_shapes
from runtime.errors import BundleError, EdgeDeeplabError
from runtime.files import atomic_write_bytes
from runtime.manifest import Manifest
from runtime.options import RuntimeOptions


class TensorRtBackend(Backend):
    """One TensorRT execution context with device buffers that grow to the largest input seen.

    Thread-safe through a lock around :meth:`run`: the context, its stream and the device buffers
    are shared, and an execution context runs one inference at a time. On a Jetson the GPU is
    one device anyway, so parallel calls would queue there; each call returns its own host array.
    """

    name = "tensorrt"

    def __init__(self, manifest: Manifest, bundle_dir: Path, options: RuntimeOptions) -> None:
        super().__init__(manifest, bundle_dir)
        import tensorrt as trt

        self._trt = trt
        self._cudart = cudart = import_cudart()
        identity = DeviceIdentity(*gpu_name_and_capability(cudart), trt.__version__)
        cache_dir = options.engine_cache_dir or default_cache_dir(bundle_dir)
        profile = profile_shapes(manifest.input.shape, options.trt_max_size, manifest.extra.get("tensorrt_profile"))
        settings = bundle_settings(manifest, profile, options.trt_workspace_mb, options.trt_fp16_with_int8)
        plan = plan_engine(manifest, bundle_dir, identity, cache_dir, settings)
        self._logger = trt_logger()
        runtime = trt.Runtime(self._logger)
        engine = None
        for path in plan.candidates:
            # None (and a logged error) when the engine file is damaged or from another TensorRT.
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is not None:
                break
            plan.notes.append(f"{path.name} does not deserialize on this device")
        if engine is None:
            if plan.build_path is None or plan.onnx_path is None:
                raise plan.failure(identity)
            print(f"edge-deeplab: {plan.build_message(identity)}", file=sys.stderr, flush=True)
            data = build_engine(plan.onnx_path, settings, plan.timing_cache_path)
            atomic_write_bytes(plan.build_path, data)
            engine = runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise EdgeDeeplabError("TensorRT built an engine it cannot deserialize (see the TensorRT log above)")
        self._runtime = runtime
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        engine_shape = list(engine.get_tensor_shape(manifest.input.name)) if manifest.input.name in inputs else []
        self.check_model_io(inputs, self._outputs, engine_shape[2:])
        if len(inputs) != 1:
            raise BundleError(f"{bundle_dir}: the engine has {len(inputs)} inputs; a segmentation bundle has one")
        self._input = manifest.input.name
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        if -1 in engine_shape:
            _, _, max_shape = engine.get_tensor_profile_shape(self._input, 0)
            self.max_hw = (int(max_shape[2]), int(max_shape[3]))
            self.max_batch = int(max_shape[0])
        self._stream = _cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._device: dict[str, tuple[int, int]] = {}  # tensor name -> (pointer, bytes)
        self._lock = threading.Lock()

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for ``name``, reallocated only when it must grow."""
        pointer, size = self._device.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _cuda_call(self._cudart, self._cudart.cudaFree(pointer), "cudaFree")
            pointer = int(_cuda_call(self._cudart, self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._device[name] = (pointer, nbytes)
            self.context.set_tensor_address(name, pointer)
        return pointer

    def run(self, batch: np.ndarray, output: str) -> np.ndarray:
        with self._lock:
            return self._run(batch, output)

    def _run(self, batch: np.ndarray, output: str) -> np.ndarray:
        cudart, kinds = self._cudart, self._cudart.cudaMemcpyKind
        batch = np.ascontiguousarray(batch, dtype=self._dtypes[self._input])
        if not self.context.set_input_shape(self._input, batch.shape):
            raise EdgeDeeplabError(f"input shape {batch.shape} is outside the engine's optimization profile")
        d_input = self._buffer(self._input, batch.nbytes)
        _cuda_call(
            cudart,
            cudart.cudaMemcpyAsync(d_input, batch.ctypes.data, batch.nbytes, kinds.cudaMemcpyHostToDevice, self._stream),
            "cudaMemcpyAsync",
        )
        host: dict[str, np.ndarray] = {}
        for name in self._outputs:  # every output needs device memory; only ``output`` is copied back
            host[name] = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtypes[name])
            self._buffer(name, host[name].nbytes)
        if not self.context.execute_async_v3(int(self._stream)):
            raise EdgeDeeplabError("TensorRT inference failed (see the TensorRT log above)")
        out = host[output]
        d_output = self._device[output][0]
        _cuda_call(
            cudart,
            cudart.cudaMemcpyAsync(out.ctypes.data, d_output, out.nbytes, kinds.cudaMemcpyDeviceToHost, self._stream),
            "cudaMemcpyAsync",
        )
        _cuda_call(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out

    def close(self) -> None:
        for pointer, _ in self._device.values():
            self._cudart.cudaFree(pointer)
        self._device.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
