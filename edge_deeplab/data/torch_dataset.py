"""The bridge from numpy samples to torch tensors, with reproducible augmentation.

This is the only data module that imports torch. Randomness never comes from global or per-worker
RNG state: the augmentation of sample ``i`` in epoch ``e`` uses a Generator seeded with
``(seed, e, i)``. So the number of workers, their scheduling, and whether training was
interrupted and resumed make no difference to what the model sees.

The sampler (the training loop's) hands out ``(index, epoch)`` pairs instead of bare indices, so
even persistent worker processes, which keep their own copy of this object, use the right epoch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from edge_deeplab.data.dataset import SegmentationDataset
from edge_deeplab.data.transforms import Transform
from runtime.errors import EdgeDeeplabError
from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize

# Leading word of the seed sequence, so augmentation streams never coincide with a dataset's own
# generator (or another seeded stream) for the same small integers.
_AUGMENT_STREAM = 0xA06


class TorchSegmentation(Dataset):
    """Wrap a :class:`SegmentationDataset` and a transform: item -> (float32 3xHxW, int64 HxW).

    Index with an int (uses :attr:`epoch`, set by :meth:`set_epoch`) or with an ``(index, epoch)``
    pair, as the training loop's sampler yields.
    """

    def __init__(self, dataset: SegmentationDataset, transform: Transform, seed: int = 0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.mean, self.std = tuple(mean), tuple(std)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        try:
            sample = self.dataset[int(index)]
        except EdgeDeeplabError as exc:
            # In a DataLoader worker the exception is rebuilt in the main process from its class and
            # one message argument; subclasses with other signatures would arrive as RuntimeError.
            raise EdgeDeeplabError(str(exc)) from None
        rng = np.random.default_rng([_AUGMENT_STREAM, self.seed, int(epoch), int(index) % len(self.dataset)])
        image, mask = self.transform(sample.image, sample.mask, rng)
        x = torch.from_numpy(normalize(image, self.mean, self.std))
        y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        return x, y


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, mask)`` pairs into an Nx3xHxW float batch and an NxHxW int64 batch.

    Crops make every item the same size; a size mismatch means a transform without a crop was
    used for training, which deserves a clear error rather than torch's stack message.
    """
    shapes = {tuple(x.shape) for x, _ in batch}
    if len(shapes) > 1:
        raise EdgeDeeplabError(f"a training batch mixes image sizes {sorted(shapes)}; training needs a crop size")
    images = torch.stack([x for x, _ in batch])
    masks = torch.stack([y for _, y in batch])
    return images, masks
