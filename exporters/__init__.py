"""Checkpoint -> ONNX -> bundles for ONNX Runtime, OpenVINO and TensorRT (see ``docs/bundle.md``)."""
