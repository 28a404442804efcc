"""The torch device a run asks for (``cpu``, ``cuda`` or ``cuda:N``), checked before any work.

``--device cuda:7`` on a machine without CUDA, or with one GPU, would otherwise fail inside torch
after the model is built and the data read. :func:`check_device_name` checks the spelling without
torch (for option validation); :func:`torch_device` also checks that this machine has the device.
"""

from __future__ import annotations

import re

from runtime.errors import EdgeDeeplabError

_DEVICE = re.compile(r"cpu|cuda(?::(\d+))?")


def check_device_name(text: str) -> str:
    """``text`` if it names a device this project runs on, else one line saying what does."""
    if not _DEVICE.fullmatch(text):
        raise EdgeDeeplabError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {text!r}")
    return text


def torch_device(text: str):
    """The ``torch.device`` for ``text``, when this machine has it."""
    import torch

    match = _DEVICE.fullmatch(check_device_name(text))
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise EdgeDeeplabError(f"--device {text}: this torch build ({torch.__version__}) sees no CUDA GPU; "
                               "use --device cpu")
    index, count = int(match.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise EdgeDeeplabError(f"--device {text}: this machine has {count} CUDA GPU(s), "
                               f"cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}")
    return torch.device("cuda", index)
