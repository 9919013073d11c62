"""A small safetensors reader and writer (numpy; torch tensors accepted on write).

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 N, then N bytes of
UTF-8 JSON {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}} (offsets relative to the byte after the header), then the tensor bytes,
row-major little-endian. Like the reference writer, the header is padded with spaces to a multiple of
8 bytes. There is no safetensors Python package on the test machines; this is what the parity suite
uses to hand weights to gputrain and to read gputrain's outputs.
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


class SafetensorsError(ValueError):
    pass


def read(path):
    """Returns (tensors: dict name -> numpy array (a copy), metadata: dict str -> str).

    Checks what a reader must: header length inside the file, valid JSON, known dtypes, offsets
    inside the data and matching the shape; dict order = file order of the data."""
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
    data = blob[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings: {meta!r}")
    items = []
    for name, info in header.items():
        try:
            dt = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            b, e = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as ex:
            raise SafetensorsError(f"{path}: tensor {name!r}: bad entry {info!r} ({ex})") from None
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= b <= e <= len(data)) or e - b != count * dt.itemsize:
            raise SafetensorsError(f"{path}: tensor {name!r}: offsets [{b}, {e}] do not match shape "
                                   f"{shape} {info['dtype']} within {len(data)} data bytes")
        items.append((b, name, np.frombuffer(data, dtype=dt, count=count, offset=b).reshape(shape).copy()))
    items.sort(key=lambda t: t[0])
    return {name: arr for _, name, arr in items}, dict(meta)


def _to_numpy(t):
    if hasattr(t, "detach"):  # torch.Tensor
        t = t.detach().cpu().contiguous().numpy()
    a = np.asarray(t)
    if a.dtype.newbyteorder("<") not in _NAMES:
        raise SafetensorsError(f"unsupported dtype {a.dtype}")
    return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))


def write(path, tensors, metadata=None, order=None):
    """Writes `tensors` (dict name -> numpy array or torch tensor) to `path`.

    `order`: the names in the order their bytes are laid out (default: dict order). `metadata`: a
    dict str -> str (non-strings are JSON-encoded, e.g. lists of floats)."""
    names = list(order) if order is not None else list(tensors)
    if sorted(names) != sorted(tensors):
        raise SafetensorsError("order must name every tensor once")
    header, chunks, offset = {}, [], 0
    for name in names:
        a = _to_numpy(tensors[name])
        raw = a.tobytes(order="C")
        header[name] = {"dtype": _NAMES[a.dtype.newbyteorder("<")], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): v if isinstance(v, str) else json.dumps(v)
                                  for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)
