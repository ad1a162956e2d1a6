"""GGUF headers: the metadata key/values and tensor infos at the start of a GGUF file.

Two readers fill the same `GgufHeader`: llama.cpp's own `gguf.GGUFReader` for a whole local file
(`read_local`), and `parse_header` below for a buffer that holds only the first bytes of a file
(a ranged HTTP read). GGUFReader cannot do the latter: it memory-maps the file and builds an array
for every tensor's data, so a truncated file fails. The parser follows the GGUF spec
(ggml/docs/gguf.md): magic `GGUF`, version 2 or 3, tensor and key/value counts, typed values
(arrays included), tensor infos, and data aligned to `general.alignment` (32 by default).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from llama_wizard.models.errors import GgufError
from llama_wizard.models.quant import tensor_bytes

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Arrays longer than this keep only their length (tokenizer vocabularies and merges: the estimate
# needs how many, not which).
ARRAY_VALUES_KEPT = 4096
# Sanity bounds, so a corrupt or hostile header cannot make us allocate or loop without end.
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 20
MAX_STRING = 1 << 28
MAX_DIMS = 8

_SCALARS = {
    0: ("B", 1),  # UINT8
    1: ("b", 1),  # INT8
    2: ("H", 2),  # UINT16
    3: ("h", 2),  # INT16
    4: ("I", 4),  # UINT32
    5: ("i", 4),  # INT32
    6: ("f", 4),  # FLOAT32
    7: ("?", 1),  # BOOL
    10: ("Q", 8),  # UINT64
    11: ("q", 8),  # INT64
    12: ("d", 8),  # FLOAT64
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class ArrayInfo:
    """A long metadata array whose values were skipped."""

    item_type: int
    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def n_bytes(self) -> int:
        return tensor_bytes(self.ggml_type, self.n_elements)

    @property
    def type_name(self) -> str:
        try:
            return gguf.GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return str(self.ggml_type)


@dataclass
class GgufHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    # Where the tensor data starts: the header's size in the file.
    data_offset: int
    file_bytes: int | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


class NeedMoreBytes(Exception):
    """The buffer ends inside the header; at least `needed` bytes are required."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class _Cursor:
    def __init__(self, data: bytes | memoryview, endian: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.endian = endian

    def take(self, size: int) -> memoryview:
        end = self.pos + size
        if end > len(self.data):
            raise NeedMoreBytes(end)
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str, size: int) -> Any:
        end = self.pos + size
        if end > len(self.data):
            raise NeedMoreBytes(end)
        (value,) = struct.unpack_from(self.endian + fmt, self.data, self.pos)
        self.pos = end
        return value

    def u32(self) -> int:
        return self.unpack("I", 4)

    def u64(self) -> int:
        return self.unpack("Q", 8)

    def string(self, what: str) -> str:
        length = self.u64()
        if length > MAX_STRING:
            raise GgufError(
                f"The GGUF header is corrupt: {what} claims a string of {length} bytes.",
                "Download the file again; if it persists, the file was written by a broken tool.",
            )
        return bytes(self.take(length)).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.u64()
        if length > MAX_STRING:
            raise GgufError(
                f"The GGUF header is corrupt: a string of {length} bytes.",
                "Download the file again; if it persists, the file was written by a broken tool.",
            )
        self.take(length)


def _value(cursor: _Cursor, value_type: int, key: str) -> Any:
    if value_type in _SCALARS:
        fmt, size = _SCALARS[value_type]
        return cursor.unpack(fmt, size)
    if value_type == _STRING:
        return cursor.string(key)
    if value_type == _ARRAY:
        item_type = cursor.u32()
        count = cursor.u64()
        if count > (1 << 32):
            raise GgufError(
                f"The GGUF header is corrupt: {key} claims {count} array items.",
                "Download the file again; if it persists, the file was written by a broken tool.",
            )
        keep = count <= ARRAY_VALUES_KEPT
        if item_type in _SCALARS:
            fmt, size = _SCALARS[item_type]
            raw = cursor.take(size * count)
            if not keep:
                return ArrayInfo(item_type, count)
            return list(struct.unpack(f"{cursor.endian}{count}{fmt}", raw))
        if item_type == _STRING:
            if not keep:
                for _ in range(count):
                    cursor.skip_string()
                return ArrayInfo(item_type, count)
            return [cursor.string(key) for _ in range(count)]
        if item_type == _ARRAY:
            return [_value(cursor, _ARRAY, key) for _ in range(count)]
        raise _bad_type(key, item_type)
    raise _bad_type(key, value_type)


def _bad_type(key: str, value_type: int) -> GgufError:
    return GgufError(
        f"The GGUF header has an unknown value type {value_type} (key {key!r}).",
        "The file may be corrupt or from a newer GGUF version than this tool reads.",
    )


def not_gguf_error(what: str, first: bytes) -> GgufError:
    shown = first[:4]
    return GgufError(
        f"{what} is not a GGUF file (it starts with {shown!r}, not b'GGUF').",
        "Point at a .gguf model file. An HTML page here usually means a web page was "
        "downloaded instead of the file: use the /resolve/ link, not /blob/.",
    )


def parse_header(data: bytes | memoryview, what: str = "the file") -> GgufHeader:
    """Parse a GGUF header from the first bytes of a file. Raises NeedMoreBytes when `data` ends
    before the tensor infos do, GgufError when it is not a (readable) GGUF."""
    if len(data) < 4:
        raise NeedMoreBytes(24)
    if bytes(data[:4]) != GGUF_MAGIC:
        raise not_gguf_error(what, bytes(data[:8]))
    if len(data) < 8:
        raise NeedMoreBytes(24)
    endian = "<"
    (version,) = struct.unpack_from("<I", data, 4)
    if version & 0xFFFF == 0 and version != 0:
        endian = ">"  # a big-endian GGUF (s390x builds)
        (version,) = struct.unpack_from(">I", data, 4)
    if version not in (2, 3):
        raise GgufError(
            f"{what} is GGUF version {version}; this tool reads versions 2 and 3.",
            "Version 1 files are from 2023 and llama.cpp no longer loads them: download a "
            "current conversion of the model.",
        )
    cursor = _Cursor(data, endian)
    cursor.pos = 8
    n_tensors = cursor.u64()
    n_kv = cursor.u64()
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise GgufError(
            f"The GGUF header of {what} is corrupt ({n_tensors} tensors, {n_kv} keys).",
            "Download the file again.",
        )
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cursor.string("a key")
        value_type = cursor.u32()
        metadata[key] = _value(cursor, value_type, key)
    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = cursor.string("a tensor name")
        n_dims = cursor.u32()
        if n_dims > MAX_DIMS:
            raise GgufError(
                f"The GGUF header of {what} is corrupt: tensor {name!r} has {n_dims} dims.",
                "Download the file again.",
            )
        shape = tuple(cursor.u64() for _ in range(n_dims))
        ggml_type = cursor.u32()
        offset = cursor.u64()
        tensors.append(TensorInfo(name, shape, ggml_type, offset))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    data_offset = -(-cursor.pos // alignment) * alignment
    return GgufHeader(int(version), metadata, tensors, data_offset)


def read_local(path: str | Path) -> GgufHeader:
    """The header of a local GGUF file, read with llama.cpp's gguf.GGUFReader."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            first = handle.read(8)
    except OSError as error:
        raise GgufError(
            f"Cannot read {path}: {error.strerror or error}.",
            "Check the path and that you may read the file.",
        ) from None
    if first[:4] != GGUF_MAGIC:
        raise not_gguf_error(str(path), first)
    try:
        reader = gguf.GGUFReader(path, "r")
    except (ValueError, OSError, IndexError, KeyError, struct.error):
        # GGUFReader's own words are numpy's ("cannot reshape array ..."): our parser says what
        # is missing instead.
        raise _incomplete(path) from None
    metadata: dict[str, Any] = {}
    for key, reader_field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        metadata[key] = _field_value(reader_field)
    tensors = [
        TensorInfo(
            t.name,
            tuple(int(d) for d in t.shape),
            int(t.tensor_type),
            int(t.data_offset) - int(reader.data_offset),
        )
        for t in reader.tensors
    ]
    header = GgufHeader(
        int(reader.fields["GGUF.version"].parts[-1][0]),
        metadata,
        tensors,
        int(reader.data_offset),
        file_bytes=path.stat().st_size,
        sources=[str(path)],
    )
    # GGUFReader does not check that the tensor data is really there.
    end = header_end(header)
    if header.file_bytes is not None and end > header.file_bytes:
        raise truncated_error(str(path), header.file_bytes, end)
    return header


HEADER_READ_LIMIT = 256 << 20  # a header longer than this is corrupt, not merely long


def header_end(header: GgufHeader) -> int:
    """The size a complete file with this header has: where its last tensor's data ends."""
    return header.data_offset + max((t.offset + t.n_bytes for t in header.tensors), default=0)


def truncated_error(what: str, size: int, needed: int | None) -> GgufError:
    """A file that ends before it should: its size, and what a complete one has when known."""
    from llama_wizard.models.sizes import human_bytes

    def shown(count: int) -> str:  # exact bytes too: 33.0 MiB and 33.0 MiB may differ
        return f"{human_bytes(count)} ({count} bytes)" if count >= 1024 else f"{count} bytes"

    if needed is None:
        detail = f"it ends inside its header, after {shown(size)}"
    else:
        detail = f"its tensors need {shown(needed)}, the file has {shown(size)}"
    return GgufError(
        f"{what} is truncated, not a complete GGUF file: {detail}.",
        "The download was interrupted: download the file again (or delete it and let "
        "llama.cpp's -hf fetch it anew).",
    )


def _incomplete(path: Path) -> GgufError:
    """Why GGUFReader could not read a file that starts like a GGUF: our own parse of its
    header says whether the file ends inside the header or inside the tensor data."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            data = handle.read(min(size, HEADER_READ_LIMIT))
    except OSError as error:
        return GgufError(
            f"Cannot read {path}: {error.strerror or error}.",
            "Check the path and that you may read the file.",
        )
    try:
        header = parse_header(data, str(path))
    except NeedMoreBytes:
        return truncated_error(str(path), size, None)
    except GgufError as error:
        return error
    end = header_end(header)
    if end > size:
        return truncated_error(str(path), size, end)
    return GgufError(
        f"{path} has a GGUF header that llama.cpp's gguf reader cannot read (its values do not "
        "match their types).",
        "The file is corrupt: download it again.",
    )


def _field_value(reader_field: Any) -> Any:
    types = reader_field.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        count = len(reader_field.data)
        if count > ARRAY_VALUES_KEPT:
            return ArrayInfo(int(types[1]) if len(types) > 1 else 0, count)
    return reader_field.contents()
