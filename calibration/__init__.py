"""INT8 calibration: the representative image set and the adapters each toolchain is fed with.

Torch-free: it imports :mod:`runtime` (so calibration images are prepared by the very functions
that prepare images at inference) and numpy; ONNX Runtime and NNCF are imported only by the
adapter for that toolchain.

- :mod:`calibration.selection`: which images (deterministic, every class covered).
- :mod:`calibration.inputs`: image -> model input, the runtime's fit/pad/normalize.
- :mod:`calibration.ranges`: activation ranges computed once and cached (ONNX Runtime calibrators).
- :mod:`calibration.ort_reader`, :mod:`calibration.nncf_data`: the feeding adapters.
"""
