"""The protocol between the trusted grader and the student's sandboxed process.

Messages are length-prefixed pickles on a Unix socket. The two directions are not
symmetric, and that asymmetry is the integrity guarantee:

* **trusted -> student**: any picklable value (cloudpickle, so the test's lambdas and
  torch modules travel by value). The student's process may do what it likes with them.
* **student -> trusted**: *plain data only*. The student side turns every object into
  exact builtins (``int``, ``float``, ``str``, ``tuple``, ``list``, ``dict``, ...) or a
  tagged array (numpy, torch) before pickling; the trusted side unpickles with
  :class:`PlainUnpickler`, which refuses every class. An object with a rigged
  ``__eq__``, a subclass of ``ndarray`` or ``float``, anything defined by the student,
  arrives as an opaque :class:`RemoteObject` that compares equal to nothing but itself.

So the values that hidden tests compare in the trusted process are the student's
*results*, never the student's *behaviour*.
"""

from __future__ import annotations

import io
import pickle
import socket
import struct
import time

_HEADER = struct.Struct("!Q")
MAX_MESSAGE_BYTES = 256 * 2**20  # a result larger than this is refused, not buffered

# Exact types that pickle as themselves: no class lookup is needed to load them.
PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes)
PLAIN_CONTAINERS = (tuple, list, dict, set, frozenset)


class ChannelClosed(ConnectionError):
    """The other end closed the socket (the student's process ended)."""


class ChannelTimeout(TimeoutError):
    """No complete message arrived within the time limit."""


class MessageTooLarge(ValueError):
    """A message is over :data:`MAX_MESSAGE_BYTES`."""


# --------------------------------------------------------------------------- framing


def send_bytes(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def recv_bytes(sock: socket.socket, timeout: float | None = None, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """One framed message; :class:`ChannelTimeout` when ``timeout`` seconds pass first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    size = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))[0]
    if size > limit:
        raise MessageTooLarge(f"a message of {size} bytes is over the limit of {limit} bytes")
    return _recv_exact(sock, size, deadline)


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, received = [], 0
    while received < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout("no reply before the time limit")
            sock.settimeout(remaining)
        else:
            sock.settimeout(None)
        try:
            chunk = sock.recv(min(size - received, 1 << 20))
        except TimeoutError as error:
            raise ChannelTimeout("no reply before the time limit") from error
        except OSError as error:
            raise ChannelClosed(str(error)) from error
        if not chunk:
            raise ChannelClosed("the other process closed the connection")
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- trusted side


class RemoteObject:
    """Stands for an object that stayed in the student's process.

    It has identity equality only, so no comparison can succeed by accident; passing
    it back to a student function hands the student the original object.
    """

    __slots__ = ("handle", "type_name", "text")

    def __init__(self, handle: int, type_name: str, text: str):
        self.handle, self.type_name, self.text = handle, type_name, text

    def __repr__(self) -> str:
        return f"<object of type {self.type_name} from the student's process: {self.text}>"

    def __reduce__(self):  # never pickled by value: the trusted pickler sends the handle
        raise pickle.PicklingError("a RemoteObject is sent by handle, not by value")


class PlainUnpickler(pickle.Unpickler):
    """Loads what the student's process sent: exact builtins and tagged arrays, nothing else."""

    def __init__(self, data: bytes, known: list | None = None):
        super().__init__(io.BytesIO(data))
        self.known = known or []

    def find_class(self, module, name):
        if (module, name) == ("builtins", "complex"):  # complex numbers pickle through their type
            return complex
        raise pickle.UnpicklingError(f"the student's process sent a {module}.{name} object, which is refused")

    def persistent_load(self, pid):
        tag = pid[0]
        if tag == "known":  # one of the trusted objects passed as an argument, returned as is
            return self.known[pid[1]]
        if tag == "remote":
            return RemoteObject(int(pid[1]), str(pid[2]), str(pid[3]))
        if tag == "ndarray":
            return _load_ndarray(*pid[1:])
        if tag == "npscalar":
            return _load_ndarray(pid[1], (), pid[2])[()]
        if tag == "tensor":
            return _load_tensor(*pid[1:])
        if tag == "npgenerator":
            return _load_np_generator(pid[1])
        raise pickle.UnpicklingError(f"unknown tag {tag!r} from the student's process")


def loads_plain(data: bytes, known: list | None = None):
    return PlainUnpickler(data, known).load()


def _load_ndarray(dtype: str, shape, raw: bytes):
    import numpy as np

    dt = np.dtype(dtype)
    if dt.hasobject:
        raise pickle.UnpicklingError("object arrays are refused")
    shape = tuple(int(n) for n in shape)
    count = 1
    for n in shape:
        count *= n
    if len(raw) != count * dt.itemsize:
        raise pickle.UnpicklingError("an array's bytes do not match its shape")
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


def _load_tensor(dtype: str, shape, raw: bytes, requires_grad: bool):
    import torch

    array = _load_ndarray(_TORCH_TO_NUMPY[dtype], shape, raw) if dtype != "bfloat16" else None
    if array is None:  # bfloat16 travels as float32
        array = _load_ndarray("<f4", shape, raw)
        tensor = torch.from_numpy(array).to(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    return tensor.requires_grad_(bool(requires_grad)) if tensor.is_floating_point() else tensor


def _load_np_generator(state: dict):
    import numpy as np

    name = state.get("bit_generator")
    if name not in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"):
        raise pickle.UnpicklingError(f"unknown bit generator {name!r}")
    generator = np.random.Generator(getattr(np.random, name)())
    generator.bit_generator.state = state
    return generator


_TORCH_TO_NUMPY = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "int64": "<i8", "int32": "<i4",
    "int16": "<i2", "int8": "|i1", "uint8": "|u1", "bool": "|b1", "complex64": "<c8", "complex128": "<c16",
}


# --------------------------------------------------------------------------- student side


class PlainPickler(pickle.Pickler):
    """Pickles a student's value as plain data; anything else stays behind as a handle."""

    def __init__(self, file, known_ids: dict[int, int], keep):
        super().__init__(file, protocol=5)
        self.known_ids = known_ids  # id(argument object) -> index in the caller's list
        self.keep = keep  # callable(obj) -> handle for objects that stay in this process

    def persistent_id(self, obj):
        index = self.known_ids.get(id(obj))
        if index is not None:
            return ("known", index)
        kind = type(obj)
        if kind in PLAIN_SCALARS or kind in PLAIN_CONTAINERS:
            if kind is dict and not all(type(k) in PLAIN_SCALARS for k in obj):
                return self._remote(obj)
            return None
        tagged = _tag_array(obj)
        return tagged if tagged is not None else self._remote(obj)

    def _remote(self, obj):
        try:
            text = repr(obj)[:200]
        except BaseException:  # a student's __repr__ may raise anything
            text = "(repr failed)"
        return ("remote", self.keep(obj), _type_name(obj), text)


def dumps_plain(value, known_ids: dict[int, int], keep) -> bytes:
    buffer = io.BytesIO()
    PlainPickler(buffer, known_ids, keep).dump(value)
    return buffer.getvalue()


def _type_name(obj) -> str:
    kind = type(obj)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"


def _tag_array(obj):
    """The tagged plain form of an exact numpy array, numpy scalar, torch tensor or Generator."""
    import sys

    np = sys.modules.get("numpy")
    if np is not None:
        if type(obj) is np.ndarray and not obj.dtype.hasobject and obj.dtype.fields is None:
            return ("ndarray", obj.dtype.str, obj.shape, np.ascontiguousarray(obj).tobytes())
        if isinstance(obj, np.generic) and type(obj).__module__ == "numpy" and not obj.dtype.hasobject:
            return ("npscalar", obj.dtype.str, np.asarray(obj).tobytes())
        if type(obj) is np.random.Generator:
            return ("npgenerator", _plain_state(obj.bit_generator.state))
    torch = sys.modules.get("torch")
    if torch is not None and type(obj) in (torch.Tensor, torch.nn.Parameter) and obj.layout == torch.strided:
        tensor = obj.detach().cpu()
        name = str(tensor.dtype).removeprefix("torch.")
        if name == "bfloat16":
            raw = tensor.float().contiguous().numpy().tobytes()
        elif name in _TORCH_TO_NUMPY:
            raw = tensor.contiguous().numpy().tobytes()
        else:
            return None
        return ("tensor", name, tuple(tensor.shape), raw, bool(obj.requires_grad))
    return None


def _plain_state(state):
    """A bit generator's state as exact builtins (its arrays as lists)."""
    if isinstance(state, dict):
        return {str(k): _plain_state(v) for k, v in state.items()}
    if hasattr(state, "tolist"):
        return state.tolist()
    return state
