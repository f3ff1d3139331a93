"""The protocol between the trusted grader and the student's sandboxed process.

Messages are length-prefixed frames on a Unix socket. The two directions differ, and that
difference is the integrity guarantee:

* **trusted -> student**: a pickle (cloudpickle: the tests' lambdas, helpers and torch modules
  travel by value). The student's process may do what it likes with it.
* **student -> trusted**: **data, never code**. :func:`encode` turns a value into JSON plus raw
  array bytes (dtype, shape, offset, as ``.npy`` and safetensors do); :func:`decode` rebuilds
  only exact builtins, numpy arrays and scalars, torch tensors and numpy Generators from it,
  within size and depth limits, and raises :class:`Malformed` for anything else. Whatever is not
  plain data (a module, an optimizer, an object of the student's class) stays in the student's
  process and is sent as a handle (``{"h": [number, type name, repr]}``).
"""

from __future__ import annotations

import collections
import json
import socket
import struct
import sys
import time

MAX_MESSAGE_BYTES = 256 * 2**20  # a reply larger than this is refused, not buffered
MAX_DEPTH = 64  # nesting of lists, tuples and dicts in a reply
NUMPY_KINDS = "biufcSU"  # dtypes that hold plain numbers, booleans or fixed-width strings
TORCH_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                "complex64", "complex128")
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class ChannelClosed(ConnectionError):
    """The other end closed the socket (the student's process ended)."""


class ChannelTimeout(TimeoutError):
    """No complete message arrived within the time limit."""


class Malformed(ValueError):
    """A reply that is not a well-formed data message (or is over the size limit)."""


class NotPlainData(TypeError):
    """Raised by :func:`encode` when a value must be plain data and is not."""


# --------------------------------------------------------------------------- framing


def send_bytes(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!Q", len(payload)) + payload)


def recv_bytes(sock: socket.socket, timeout: float | None = None, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """One framed message; :class:`ChannelTimeout` when ``timeout`` seconds pass first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    size = struct.unpack("!Q", _recv_exact(sock, 8, deadline))[0]
    if size > limit:
        raise Malformed(f"a message of {size} bytes is over the limit of {limit} bytes")
    return _recv_exact(sock, size, deadline)


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, received = [], 0
    while received < size:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise ChannelTimeout("no reply before the time limit")
        sock.settimeout(remaining)
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


def send_json(sock: socket.socket, value) -> None:
    """A small JSON message (the fork server's control channel)."""
    send_bytes(sock, json.dumps(value).encode())


def recv_json(sock: socket.socket, timeout: float | None = None) -> dict:
    try:
        value = json.loads(recv_bytes(sock, timeout, 1 << 16))
    except (ValueError, RecursionError) as error:
        raise Malformed(f"not a JSON message: {error}") from None
    if not isinstance(value, dict):
        raise Malformed("not a JSON object")
    return value


# --------------------------------------------------------------------------- student side: encode


def encode(message: dict, keep, result_mode: str = "auto") -> bytes:
    """A reply as bytes. ``keep(obj) -> int`` stores an object that stays here and numbers it.

    ``message["result"]`` is encoded by ``result_mode``: ``"auto"`` (plain data, handles for the
    rest), ``"handle"`` (always a handle) or ``"data"`` (:class:`NotPlainData` unless it is plain
    data); the rest of the message must be plain data.
    """
    encoder = _Encoder(keep, "data")
    body = {key: encoder.value(value) for key, value in message.items() if key != "result"}
    if "result" in message:
        encoder.mode = "auto" if result_mode == "handle" else result_mode
        body["result"] = (encoder.handle if result_mode == "handle" else encoder.value)(message["result"])
    text = json.dumps(body, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
    return struct.pack("!I", len(text)) + text + b"".join(encoder.buffers)


class _Encoder:
    def __init__(self, keep, mode: str):
        self.keep, self.mode, self.buffers, self.size = keep, mode, [], 0

    def blob(self, raw: bytes) -> list[int]:
        self.buffers.append(raw)
        self.size += len(raw)
        if self.size > MAX_MESSAGE_BYTES:
            raise NotPlainData(f"the reply is over the grader's limit of {MAX_MESSAGE_BYTES} bytes")
        return [self.size - len(raw), len(raw)]

    def handle(self, obj):
        if self.mode == "data":
            raise NotPlainData(f"a {_type_name(obj)} is not plain data")
        try:
            text = repr(obj)[:200]
        except BaseException:  # a student's __repr__ may raise anything
            text = "(repr failed)"
        return {"h": [self.keep(obj), _type_name(obj), text]}

    def value(self, obj, depth: int = 0):
        if depth > MAX_DEPTH:
            raise NotPlainData(f"the result is nested more than {MAX_DEPTH} levels deep")
        kind, inner = type(obj), depth + 1
        if obj is None or kind in (bool, int, str):
            return obj
        if kind is float:
            return obj if obj == obj and obj not in (float("inf"), float("-inf")) else {"f": repr(obj)}
        if kind is list:
            return [self.value(x, inner) for x in obj]
        if kind is tuple or (isinstance(obj, tuple) and (hasattr(kind, "_fields") or kind.__module__ ==
                                                         "torch.return_types")):  # namedtuples, structseqs
            return {"t": [self.value(x, inner) for x in tuple.__iter__(obj)]}
        if kind in (dict, collections.OrderedDict, collections.defaultdict):
            return {"d": [[self.value(k, inner), self.value(v, inner)] for k, v in dict.items(obj)]}
        if kind in (set, frozenset):
            return {"s" if kind is set else "fs": [self.value(x, inner) for x in obj]}
        if kind is bytes:
            return {"b": self.blob(obj)}
        if kind is complex:
            return {"c": [repr(obj.real), repr(obj.imag)]}
        tagged = self.array(obj)
        return tagged if tagged is not None else self.handle(obj)

    def array(self, obj):
        """The tagged form of an exact numpy array or scalar, a torch tensor, dtype or device, or a Generator."""
        np, torch = sys.modules.get("numpy"), sys.modules.get("torch")
        if np is not None:
            if type(obj) is np.ndarray and obj.dtype.kind in NUMPY_KINDS and obj.dtype.fields is None:
                return {"nd": [obj.dtype.str, list(obj.shape), *self.blob(np.ascontiguousarray(obj).tobytes())]}
            if isinstance(obj, np.generic) and type(obj).__module__ == "numpy" and obj.dtype.kind in NUMPY_KINDS:
                return {"ns": [obj.dtype.str, *self.blob(np.asarray(obj).tobytes())]}
            if type(obj) is np.random.Generator and (state := obj.bit_generator.state)["bit_generator"] in BIT_GENERATORS:
                return {"g": json.loads(json.dumps(state, default=lambda a: a.tolist()))}
        if torch is not None:
            if type(obj) in (torch.Tensor, torch.nn.Parameter) and obj.layout == torch.strided:
                name = str(obj.dtype).removeprefix("torch.")
                if name not in TORCH_DTYPES or obj.is_quantized or obj.is_meta:
                    return None
                return {"pt": [name, list(obj.shape), *self.blob(tensor_bytes(obj)), bool(obj.requires_grad)]}
            if type(obj) is torch.Size:
                return {"t": [int(n) for n in obj]}
            if type(obj) in (torch.dtype, torch.device):
                return str(obj)
        return None


def tensor_bytes(tensor) -> bytes:
    """The raw bytes of a strided tensor's elements in row-major order, whatever its layout
    (a strided view, a transposed matrix, channels_last): what the wire sends, and what the
    student's process checksums to notice an argument changed in place."""
    torch = sys.modules["torch"]
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _type_name(obj) -> str:
    kind = type(obj)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"


# --------------------------------------------------------------------------- trusted side: decode


def decode(data: bytes, make_handle=None) -> dict:
    """A reply rebuilt from its bytes, or :class:`Malformed`. ``make_handle(number, type_name, text)``
    makes the trusted side's stand-in for an object that stayed in the student's process."""
    size = struct.unpack_from("!I", data)[0] if len(data) >= 4 else None
    if size is None or 4 + size > len(data):
        raise Malformed("a reply whose header or JSON part is cut off")
    try:
        body = json.loads(data[4:4 + size].decode("ascii"))
    except (ValueError, RecursionError) as error:
        raise Malformed(f"the reply is not JSON ({type(error).__name__})") from None
    if not isinstance(body, dict):
        raise Malformed("the reply is not a JSON object")
    decoder = _Decoder(memoryview(data)[4 + size:], make_handle)
    try:
        return {clean_text(key): decoder.value(value) for key, value in body.items()}
    except (TypeError, ValueError, OverflowError, MemoryError, RecursionError) as error:
        raise Malformed(f"the reply could not be rebuilt as data: {type(error).__name__}: {error}"[:500]) from None


class _Decoder:
    def __init__(self, blob: memoryview, make_handle):
        self.blob, self.make_handle = blob, make_handle

    def bytes_at(self, offset, length) -> bytes:
        if type(offset) is not int or type(length) is not int or offset < 0 or length < 0:
            raise Malformed("a bad buffer reference")
        if offset + length > len(self.blob):
            raise Malformed("a buffer reference beyond the end of the reply")
        return bytes(self.blob[offset:offset + length])

    def value(self, obj, depth: int = 0):
        if depth > MAX_DEPTH:
            raise Malformed(f"the reply is nested more than {MAX_DEPTH} levels deep")
        if obj is None or type(obj) in (bool, int, float):
            return obj
        if type(obj) is str:
            return clean_text(obj)
        if type(obj) is list:
            return [self.value(x, depth + 1) for x in obj]
        if type(obj) is not dict or len(obj) != 1:
            raise Malformed("an unknown value in the reply")
        ((tag, item),) = obj.items()
        items = item if type(item) is list else None
        if tag in ("t", "s", "fs") and items is not None:
            return {"t": tuple, "s": set, "fs": frozenset}[tag](self.value(x, depth + 1) for x in items)
        if tag == "d" and items is not None:
            if not all(type(p) is list and len(p) == 2 for p in items):
                raise Malformed("a dict entry that is not a pair")
            return {self.value(k, depth + 1): self.value(v, depth + 1) for k, v in items}
        if tag == "f" and item in ("nan", "inf", "-inf"):
            return float(item)
        if tag == "c" and items is not None and len(items) == 2 and all(type(x) is str for x in items):
            return complex(float(items[0]), float(items[1]))
        if tag == "b" and items is not None and len(items) == 2:
            return self.bytes_at(*items)
        if tag in ("nd", "ns") and items is not None and len(items) == (4 if tag == "nd" else 3):
            array = self.ndarray(items[0], items[1] if tag == "nd" else [], self.bytes_at(*items[-2:]))
            return array if tag == "nd" else array[()]
        if tag == "pt" and items is not None and len(items) == 5:
            return self.tensor(items[0], items[1], self.bytes_at(items[2], items[3]), items[4])
        if tag == "g" and type(item) is dict:
            return self.generator(item)
        if tag == "h" and items is not None and len(items) == 3 and self.make_handle is not None:
            number, type_name, text = items
            if type(number) is not int or type(type_name) is not str or type(text) is not str:
                raise Malformed("a bad handle")
            return self.make_handle(number, clean_text(type_name[:300]), clean_text(text[:300]))
        raise Malformed(f"an unknown tag {str(tag)[:20]!r} in the reply")

    @staticmethod
    def shape(shape, itemsize: int, raw: bytes) -> tuple[int, ...]:
        if type(shape) is not list or len(shape) > 32 or not all(type(n) is int and n >= 0 for n in shape):
            raise Malformed("a bad array shape")
        count = 1
        for n in shape:
            count *= n
        if len(raw) != count * itemsize:
            raise Malformed("an array's bytes do not match its shape")
        return tuple(shape)

    def ndarray(self, dtype, shape, raw: bytes):
        import numpy as np

        if type(dtype) is not str or len(dtype) > 8:
            raise Malformed("a bad dtype")
        dt = np.dtype(dtype)
        if dt.kind not in NUMPY_KINDS or dt.fields is not None or dt.subdtype is not None or dt.itemsize == 0:
            raise Malformed(f"the dtype {dtype!r} is refused")
        return np.frombuffer(raw, dtype=dt).reshape(self.shape(shape, dt.itemsize, raw)).copy()

    def tensor(self, dtype, shape, raw: bytes, requires_grad):
        import torch

        if dtype not in TORCH_DTYPES or type(requires_grad) is not bool:
            raise Malformed("a bad tensor")
        dt = getattr(torch, dtype)
        shape = self.shape(shape, dt.itemsize, raw)
        tensor = (torch.frombuffer(bytearray(raw), dtype=dt) if raw else torch.empty(0, dtype=dt)).reshape(shape)
        return tensor.requires_grad_(True) if requires_grad and (dt.is_floating_point or dt.is_complex) else tensor

    @staticmethod
    def generator(state: dict):
        import numpy as np

        if state.get("bit_generator") not in BIT_GENERATORS:
            raise Malformed("an unknown bit generator")
        generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
        generator.bit_generator.state = state
        return generator


def clean_text(text: str) -> str:
    """``text`` without lone surrogates (which no UTF-8 file can hold): each becomes ``?``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
