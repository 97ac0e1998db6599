"""Read a PyTorch state-dict file (``torch.save`` zip format) into numpy arrays, without torch.

The ONNX engine (:mod:`saemi.engine`) builds its network from the shipped ``.pt``
weights on a serving install that has no torch, so it needs the tensors without
``torch.load``. The file is a zip archive holding one pickle (``data.pkl``, the
dict of names to tensors) and one raw little-endian buffer per storage
(``data/0``, ``data/1``, ...).

The pickle is read by an unpickler that knows only what a plain state dict is
made of — ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``
and the ``torch.*Storage`` types — each mapped to a local function; any other
global is refused, so nothing in the file can run code (the same rule as
``torch.load(weights_only=True)``, which the torch path uses).
"""

import collections
import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .errors import SaemiError

_DTYPES = {
    "HalfStorage": np.float16, "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(_DTYPES[name])


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """An ndarray view of ``storage`` (element offset and strides), copied to a contiguous array."""
    itemsize = storage.dtype.itemsize
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: not part of a plain state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, kind, key, _location, numel = pid
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            self.storages[key] = np.frombuffer(raw, dtype=kind.dtype.newbyteorder("<"), count=int(numel))
        return self.storages[key]


def read_state_dict(path):
    """The tensors of a ``torch.save``-d state dict, as numpy arrays (no torch needed).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict of str to ndarray
        In the file's order, each in the file's dtype (float16 for the shipped weights).

    Raises
    ------
    SaemiError
        (code ``no_model``) for a missing file, one that is not a zip-format state
        dict, or one whose pickle holds anything but tensors.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                raise ValueError("no data.pkl in the archive")
            prefix = pkl[0][: -len("data.pkl")]
            order = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in archive.namelist() else "little"
            if order != "little":
                raise ValueError(f"byte order {order!r} is not supported")
            with archive.open(pkl[0]) as f:
                state = _Unpickler(f, archive, prefix).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, KeyError, EOFError, TypeError) as exc:
        raise SaemiError(f"could not load model weights from {path}: {exc}", code="no_model") from exc
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise SaemiError(f"could not load model weights from {path}: not a state dict of tensors", code="no_model")
    return dict(state)


def file_sha256(path, chunk=1 << 20):
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
