"""Image preprocessing shared by training, calibration and inference.

One function normalizes pixels for every stage, so a model never sees differently prepared images
in training, INT8 calibration and on the device.
"""

from __future__ import annotations

import numpy as np

# ImageNet statistics on RGB in [0, 1]: the usual choice, and what torchvision-format backbone
# weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 3xHxW, ``(pixel / 255 - mean) / std``."""
    scale = np.asarray(std, dtype=np.float32) * 255.0
    offset = np.asarray(mean, dtype=np.float32) * 255.0
    out = (image.astype(np.float32) - offset) / scale
    return np.ascontiguousarray(out.transpose(2, 0, 1))
