"""Reading a file ``torch.save`` wrote: checked to be one before torch reads it, then loaded safely.

``torch.load`` given any other file fails from deep inside its unpickler, with whatever the bytes
happen to trigger (``IndexError: pop from empty list`` for a text file named ``.pt``). Every
checkpoint and weights file is read here: :func:`check_torch_file` looks at the first bytes (a
zip archive since PyTorch 1.6, a pickle before it) and names what the file is otherwise, and
:func:`load_torch_file` loads with ``weights_only=True`` (no pickled code runs), turning each way a
damaged file fails into one line.
"""

from __future__ import annotations

import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

from runtime.errors import EdgeDeeplabError
from runtime.files import path_error

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_PROTOCOLS = range(2, 6)  # the legacy format: a pickle, opened by PROTO 2..5 (0x80, n)
# First bytes of files people give by mistake, to say what was given.
_KNOWN = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"\x08": "an ONNX model or other protobuf",
          b"<?xml": "an XML file (an OpenVINO IR?)", b"{": "a JSON file"}


def _kind(head: bytes) -> str:
    """What a file that is not a torch file seems to be, from its first bytes."""
    for magic, kind in _KNOWN.items():
        if head.startswith(magic):
            return kind
    try:
        head[:-3].decode("utf-8")  # the last bytes may cut a character in two
    except UnicodeDecodeError:
        return "some other binary file"
    return "some other binary file" if b"\0" in head else "a text file"


def check_torch_file(path: str | Path, what: str) -> Path:
    """``path`` if it exists and starts as ``torch.save`` writes, else one line naming what it is.

    ``what`` names the file in the message ("checkpoint", "weights file").
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except FileNotFoundError:
        raise EdgeDeeplabError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise EdgeDeeplabError(f"{path} is a folder, not a {what}") from None
    except OSError as exc:
        raise path_error(exc, path, f"read {what}") from None
    if not head:
        raise EdgeDeeplabError(f"{path} is empty, not a {what}")
    if head.startswith(ZIP_MAGIC) or (head[0] == 0x80 and head[1:2] and head[1] in PICKLE_PROTOCOLS):
        return path
    raise EdgeDeeplabError(f"{path} is not a {what}: it is {_kind(head)}, not a file written by torch.save")


def _numpy_data_globals() -> list[Any]:
    """What ``torch.serialization.safe_globals`` must allow to unpickle numpy scalars.

    Training scripts (VainF's among them) pickle a numpy float64 beside the weights (``best_score``):
    the scalar constructor, named ``numpy.core...`` or ``numpy._core...`` after the numpy that wrote
    the file, ``numpy.dtype``, and, from numpy 1.25 on, the dtype's class (``numpy.dtypes.Float64DType``).
    All are plain data.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed: list[Any] = [
        np.dtype,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


# What torch.load raises on a file that starts right but is damaged (truncated, a zip of other
# files, a pickle cut short): each is a bad file, not a bug.
_DAMAGE = (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, IndexError, KeyError, TypeError, AttributeError,
           struct.error)


def load_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with every failure turned into one clear line.

    numpy scalars are let through; any other pickled object is refused rather than executed.
    """
    path = check_torch_file(path, what)  # before torch is imported: a wrong file is refused in a blink
    import torch

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            with torch.serialization.safe_globals(_numpy_data_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(exc))
        kind = next(g for g in found.groups() if g) if found else "objects other than tensors"
        raise EdgeDeeplabError(
            f"{path} holds pickled Python objects ({kind}) besides tensors; a {what} is only "
            "loaded from a file that needs no code to unpickle"
        ) from None
    except OSError as exc:
        raise path_error(exc, path, f"read {what}") from None
    except _DAMAGE as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeDeeplabError(f"{path} is not a readable PyTorch file (corrupt or truncated?): {reason[:200]}") from None
