"""edge-deeplab's device runtime: run an exported bundle on a CPU or a Jetson.

Thin on purpose: numpy, Pillow and, imported only when a bundle asks for it, the one backend that
runs it (onnxruntime, openvino or tensorrt) and OpenCV for video. Never torch, onnx or nncf.

    import runtime
    seg = runtime.load("bundles/mnv2-os16-int8-openvino")
    mask = seg.predict(image)                       # HxW class indices
    shown = runtime.overlay(image, mask, seg.palette)
"""

from runtime.errors import BundleError, EdgeDeeplabError
from runtime.images import read_image
from runtime.postprocess import colorize, overlay
from runtime.segmenter import Segmenter, load

__all__ = ["BundleError", "EdgeDeeplabError", "Segmenter", "colorize", "load", "overlay", "read_image"]
