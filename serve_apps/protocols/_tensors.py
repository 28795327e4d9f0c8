"""OIP v2 tensors: datatypes, `data` (flat or nested) against `shape`, and the binary tensor data
extension (a JSON header, then each binary tensor's little-endian bytes in input order). No Ray.

Anchors: the Open Inference Protocol's REST spec (kserve docs/predict-api/v2/required_api.md:
"Tensor Data", "Tensor Data Types") and Triton's docs/protocol/extension_binary_data.md
(`Inference-Header-Content-Length`, `binary_data_size`, BYTES as a 4-byte little-endian length
before each element), as tritonclient.http builds it (`_utils._get_inference_request`).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from serve_apps.validate import BadRequest, kind_of, shorten

# datatype -> little-endian numpy dtype; BYTES has no fixed width
DTYPES = {"BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
          "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
          "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
DATATYPES = (*DTYPES, "BYTES")


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The body -> (JSON header, binary tail) by `Inference-Header-Content-Length`."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or not 0 < int(header_length) <= len(body):
        raise BadRequest(400, f"Inference-Header-Content-Length must be the length of the "
                              f"JSON header (1..{len(body)}), got '{shorten(header_length)}'")
    n = int(header_length)
    return body[:n], body[n:]


def check_shape(shape: Any, where: str) -> list[int]:
    if not isinstance(shape, list) or not all(
            type(d) is int and d >= 0 for d in shape) or not shape:
        raise BadRequest(400, f"{where}: shape must be a list of non-negative integers, got "
                              f"{kind_of(shape)}")
    return shape


def check_datatype(datatype: Any, where: str) -> str:
    if datatype not in DATATYPES:
        raise BadRequest(400, f"{where}: datatype must be one of {list(DATATYPES)}, got "
                              f"{kind_of(datatype)}")
    return datatype


def json_values(data: Any, shape: list[int], datatype: str, where: str) -> list[Any]:
    """`data` in natural (nested) or flat row-major form -> the flat list of elements, each of
    the kind its datatype says (null allowed: the row checks decide whether it may be null)."""
    if not isinstance(data, list):
        raise BadRequest(400, f"{where}: data must be a list, got {kind_of(data)}")
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        _walk(data, shape, flat, where)
    else:
        count = math.prod(shape)
        if len(data) != count:
            raise BadRequest(400, f"{where}: shape {shape} holds {count} elements, data has "
                                  f"{len(data)}")
        flat = data
    ok = _ELEMENT_CHECKS[datatype[:2] if datatype[:2] in ("FP", "IN", "UI") else datatype]
    for j, v in enumerate(flat):
        if v is not None and not ok(v):
            raise BadRequest(400, f"{where}: {datatype} data must be {_ELEMENT_KIND[datatype]}, "
                                  f"got {kind_of(v)} at element {j}")
    return flat


def binary_values(tail: bytes, offset: int, size: Any, shape: list[int], datatype: str,
                  where: str) -> tuple[list[Any], int]:
    """One input's `binary_data_size` bytes at `offset` of the tail -> (flat elements, the
    offset after them). NaN stays NaN: the row checks treat it as a missing value."""
    if type(size) is not int or size < 0 or offset + size > len(tail):
        raise BadRequest(400, f"{where}: binary_data_size {shorten(size)} does not fit the "
                              f"{len(tail) - offset} bytes left after the JSON header")
    chunk, count = tail[offset:offset + size], math.prod(shape)
    if datatype == "BYTES":
        values = _unpack_bytes(chunk, where)
    else:
        width = np.dtype(DTYPES[datatype]).itemsize
        if size != count * width:
            raise BadRequest(400, f"{where}: {count} {datatype} elements take {count * width} "
                                  f"bytes, binary_data_size is {size}")
        values = np.frombuffer(chunk, dtype=DTYPES[datatype]).tolist()
    if len(values) != count:
        raise BadRequest(400, f"{where}: shape {shape} holds {count} elements, the binary data "
                              f"has {len(values)}")
    return values, offset + size


def pack(values: np.ndarray, datatype: str) -> bytes:
    """A tensor's elements as binary tensor data (little-endian, row-major)."""
    if datatype == "BYTES":
        parts = []
        for v in values.reshape(-1).tolist():
            b = str(v).encode()
            parts += [struct.pack("<I", len(b)), b]
        return b"".join(parts)
    return np.ascontiguousarray(values, dtype=DTYPES[datatype]).tobytes()


def datatype_of(dtype: np.dtype) -> str:
    """The datatype a numpy array of labels is sent as."""
    return {"b": "BOOL", "i": "INT64", "u": "INT64", "f": "FP64"}.get(dtype.kind, "BYTES")


def _walk(x: Any, dims: list[int], out: list[Any], where: str) -> None:
    if not dims:
        if isinstance(x, list):
            raise BadRequest(400, f"{where}: nested data is deeper than the shape")
        out.append(x)
        return
    if not isinstance(x, list) or len(x) != dims[0]:
        raise BadRequest(400, f"{where}: nested data does not match the shape: expected a list "
                              f"of {dims[0]}, got {kind_of(x)}")
    for y in x:
        _walk(y, dims[1:], out, where)


def _unpack_bytes(chunk: bytes, where: str) -> list[str]:
    values, i = [], 0
    while i < len(chunk):
        if i + 4 > len(chunk):
            raise BadRequest(400, f"{where}: BYTES data ends inside an element's length")
        (n,) = struct.unpack_from("<I", chunk, i)
        if i + 4 + n > len(chunk):
            raise BadRequest(400, f"{where}: BYTES element of {n} bytes runs past the data")
        try:
            values.append(chunk[i + 4:i + 4 + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(400, f"{where}: BYTES element {len(values)} is not UTF-8 "
                                  "text") from None
        i += 4 + n
    return values


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_integer(v: Any) -> bool:
    """An integer as JSON Schema counts them: 3 and 3.0 (some encoders write floats)."""
    return type(v) is int or (type(v) is float and v.is_integer())


_ELEMENT_CHECKS = {
    "FP": _is_number,
    "IN": lambda v: _is_integer(v),
    "UI": lambda v: _is_integer(v) and v >= 0,
    "BOOL": lambda v: type(v) is bool,
    "BYTES": lambda v: type(v) is str,
}
_ELEMENT_KIND = {**{d: "numbers" for d in DTYPES if d.startswith("FP")},
                 **{d: "integers" for d in DTYPES if d.startswith("INT")},
                 **{d: "non-negative integers" for d in DTYPES if d.startswith("UINT")},
                 "BOOL": "true or false", "BYTES": "strings"}
