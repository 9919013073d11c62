"""The one safetensors reader and writer of the Python test suites (tests/cli, tests/parity).

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 N, then N bytes of
UTF-8 JSON {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}} (offsets relative to the byte after the header), then the tensor bytes,
row-major little-endian. Like the reference writer, the header is padded with spaces to a multiple of
8 bytes. There is no safetensors Python package on the test machines, and the tests must not rest on
gputrain's own reader: this module is written from the format's definition alone (NumPy; torch
tensors accepted on write). Each conftest.py puts tests/support on sys.path.
"""
import json
import os
import struct

import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class SafetensorsError(ValueError):
    pass


class SafeTensors:
    """A file as read: tensors and raw bytes by name (header order), metadata, the parsed header."""

    def __init__(self, tensors, metadata, header, raw):
        self.tensors = tensors    # name -> np.ndarray (a copy)
        self.metadata = metadata  # dict str -> str, or None when the file has no __metadata__
        self.header = header      # the parsed JSON header, __metadata__ included
        self.raw = raw            # name -> bytes as stored

    def names(self):
        return set(self.tensors)

    def shapes(self):
        return {k: list(v.shape) for k, v in self.tensors.items()}


def load(path):
    """Reads and strictly validates a safetensors file (the rules of the safetensors library):
    header length inside the file, a JSON object, string metadata, entries with exactly dtype /
    shape / data_offsets, known dtypes, offsets matching the shape, and the tensors covering the
    data area exactly, without holes or overlaps."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise SafetensorsError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise SafetensorsError(f"{path}: header length {n} beyond the file ({len(blob)} bytes)")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    metadata = header.get("__metadata__")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise SafetensorsError(f"{path}: __metadata__ must map strings to strings: {metadata!r}")
    body = blob[8 + n:]
    tensors, raw, spans = {}, {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != _ENTRY_KEYS:
            raise SafetensorsError(f"{path}: tensor {name!r}: entry {info!r} is not exactly "
                                   f"{sorted(_ENTRY_KEYS)}")
        if info["dtype"] not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r}: unknown dtype {info['dtype']!r}")
        dt = _DTYPES[info["dtype"]]
        shape, offsets = info["shape"], info["data_offsets"]
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
                and isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(x, int) for x in offsets)):
            raise SafetensorsError(f"{path}: tensor {name!r}: bad shape or offsets in {info!r}")
        begin, end = offsets
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= begin <= end <= len(body)) or end - begin != count * dt.itemsize:
            raise SafetensorsError(f"{path}: tensor {name!r}: offsets [{begin}, {end}] do not match "
                                   f"shape {shape} {info['dtype']} within {len(body)} data bytes")
        raw[name] = body[begin:end]
        tensors[name] = np.frombuffer(body, dtype=dt, count=count, offset=begin).reshape(shape).copy()
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise SafetensorsError(f"{path}: tensor {name!r}: data starts at {begin}, expected {pos}")
        pos = end
    if pos != len(body):
        raise SafetensorsError(f"{path}: {len(body) - pos} bytes after the last tensor")
    return SafeTensors(tensors, metadata, header, raw)


def read(path):
    """Returns (tensors: dict name -> numpy array (a copy), metadata: dict str -> str), validated
    as load() does; dict order = file order of the data."""
    st = load(path)
    offset = {name: st.header[name]["data_offsets"][0] for name in st.tensors}
    names = sorted(st.tensors, key=lambda name: offset[name])
    return {name: st.tensors[name] for name in names}, dict(st.metadata or {})


def _to_numpy(t, dtype=None):
    if hasattr(t, "detach"):  # torch.Tensor
        t = t.detach().cpu().contiguous().numpy()
    a = np.asarray(t) if dtype is None else np.asarray(t, dtype=_DTYPES[dtype])
    if a.dtype.newbyteorder("<") not in _NAMES:
        raise SafetensorsError(f"unsupported dtype {a.dtype}")
    # (np.ascontiguousarray makes a 0-d array 1-d: keep the shape, [] for a scalar such as
    # BatchNorm's num_batches_tracked)
    return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False)).reshape(a.shape)


def write(path, tensors, metadata=None, order=None, dtype=None, header_override=None):
    """Writes `tensors` (dict name -> numpy array or torch tensor) to `path` (atomically).

    `order`: the names in the order their bytes are laid out (default: dict order). `dtype`: a
    safetensors dtype name ("F32", "F16", ...) every tensor is converted to (default: each keeps
    its own). `metadata`: a dict str -> str (non-strings are JSON-encoded, e.g. lists of floats);
    None writes no __metadata__. `header_override`: the header length to write instead of the true
    one (for tests of a reader's checks)."""
    names = list(order) if order is not None else list(tensors)
    if sorted(names) != sorted(tensors):
        raise SafetensorsError("order must name every tensor once")
    header, chunks, offset = {}, [], 0
    for name in names:
        a = _to_numpy(tensors[name], dtype)
        raw = a.tobytes(order="C")
        header[name] = {"dtype": _NAMES[a.dtype.newbyteorder("<")], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata is not None:
        header["__metadata__"] = {str(k): v if isinstance(v, str) else json.dumps(v)
                                  for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    n = len(hb) if header_override is None else header_override
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", n))
        f.write(hb)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)
