"""edge-deeplab's device runtime: run an exported bundle on a CPU or a Jetson.

Thin on purpose: numpy, Pillow and, imported only when a bundle asks for it, the one backend that
runs it (onnxruntime, openvino or tensorrt). Never torch, onnx or nncf.
"""

from runtime.errors import BundleError, EdgeDeeplabError

__all__ = ["BundleError", "EdgeDeeplabError"]
