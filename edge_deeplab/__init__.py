"""edge-deeplab: DeepLabv3+ from PyTorch training to quantized models on edge devices.

This top level is torch-free; torch is imported only by the model, training and ONNX export.
"""

__version__ = "0.1.0"
