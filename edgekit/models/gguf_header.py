"""Read the metadata of a GGUF file's header, streaming: no numpy, no tensor data, arrays skipped.

Only what the fit check needs is kept: architecture, block count, context length, head counts, embedding
length, key/value lengths, feed-forward length, vocabulary size and the file type. The reader stops at the
end of the key/value section, so a 5 GB model costs a few MB of reading (the tokenizer arrays are skipped).
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from edgekit.errors import UsageError

MAGIC = b"GGUF"

# GGUF value types
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
_SCALAR = {_U8: "<B", _I8: "<b", _U16: "<H", _I16: "<h", _U32: "<I", _I32: "<i", _F32: "<f", _BOOL: "<?",
           _U64: "<Q", _I64: "<q", _F64: "<d"}
_MAX_STRING = 1 << 24       # a key or scalar string longer than this means a corrupt header
_MAX_KV = 1 << 20


class GGUFError(UsageError):
    """The file is not a readable GGUF (wrong magic, truncated, corrupt header)."""


@dataclass
class GGUFHeader:
    version: int
    tensor_count: int
    architecture: str | None
    block_count: int | None
    context_length: int | None
    embedding_length: int | None
    feed_forward_length: int | None
    head_count: int | None
    head_count_kv: int | None
    key_length: int | None
    value_length: int | None
    vocab_size: int | None
    file_type: int | None
    name: str | None
    chat_template: bool          # whether tokenizer.chat_template is present
    header_bytes: int            # bytes read to get here (end of the key/value section)

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def head_dim_k(self) -> int | None:
        if self.key_length:
            return self.key_length
        if self.embedding_length and self.head_count:
            return self.embedding_length // self.head_count
        return None

    @property
    def head_dim_v(self) -> int | None:
        if self.value_length:
            return self.value_length
        return self.head_dim_k


class _Reader:
    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise GGUFError(f"truncated GGUF header: wanted {n} bytes at offset {self.pos}, got {len(data)}",
                            hint="the file is incomplete or not a GGUF; download it again")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            chunk = self.read(min(n, 1 << 20))
            n -= len(chunk)

    def scalar(self, vtype: int):
        fmt = _SCALAR[vtype]
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.read(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.read(8))[0]

    def string(self) -> str:
        n = self.u64()
        if n > _MAX_STRING:
            raise GGUFError(f"corrupt GGUF header: string of {n} bytes at offset {self.pos}")
        return self.read(n).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.u64()
        if n > _MAX_STRING:
            raise GGUFError(f"corrupt GGUF header: string of {n} bytes at offset {self.pos}")
        self.skip(n)


def _value(r: _Reader, vtype: int, keep: bool):
    """Read one value; arrays are skipped (their length is returned), strings kept only when asked."""
    if vtype in _SCALAR:
        return r.scalar(vtype)
    if vtype == _STR:
        if keep:
            return r.string()
        r.skip_string()
        return None
    if vtype == _ARR:
        itype, count = r.u32(), r.u64()
        if itype in _SCALAR:
            r.skip(struct.calcsize(_SCALAR[itype]) * count)
        elif itype == _STR:
            for _ in range(count):
                r.skip_string()
        elif itype == _ARR:
            for _ in range(count):
                _value(r, _ARR, False)
        else:
            raise GGUFError(f"corrupt GGUF header: unknown array item type {itype} at offset {r.pos}")
        return count
    raise GGUFError(f"corrupt GGUF header: unknown value type {vtype} at offset {r.pos}")


def read_header(fh: BinaryIO) -> GGUFHeader:
    """Read a GGUF header from a binary stream positioned at the start of the file."""
    r = _Reader(fh)
    magic = r.read(4)
    if magic != MAGIC:
        raise GGUFError(f"not a GGUF file (magic {magic!r}, expected b'GGUF')",
                        hint="check the file name and quantization; edgekit serves GGUF models only")
    version = r.u32()
    if version == 1:
        tensor_count, kv_count = r.u32(), r.u32()
    elif version in (2, 3):
        tensor_count, kv_count = r.u64(), r.u64()
    else:
        raise GGUFError(f"unsupported GGUF version {version}", hint="re-convert the model with a current llama.cpp")
    if kv_count > _MAX_KV:
        raise GGUFError(f"corrupt GGUF header: {kv_count} metadata entries")
    meta: dict[str, object] = {}
    for _ in range(kv_count):
        key = r.string()
        vtype = r.u32()
        wanted = key.startswith("general.") or "." in key and not key.startswith("tokenizer.")
        value = _value(r, vtype, keep=wanted)
        if key == "tokenizer.ggml.tokens":
            meta["_vocab_size"] = value
        elif key == "tokenizer.chat_template":
            meta["_chat_template"] = True
        elif wanted:
            meta[key] = value
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def num(suffix: str) -> int | None:
        v = meta.get(f"{arch}.{suffix}") if arch else None
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return GGUFHeader(
        version=version, tensor_count=tensor_count, architecture=arch,
        block_count=num("block_count"), context_length=num("context_length"),
        embedding_length=num("embedding_length"), feed_forward_length=num("feed_forward_length"),
        head_count=num("attention.head_count"),
        head_count_kv=num("attention.head_count_kv") or num("attention.head_count"),
        key_length=num("attention.key_length"), value_length=num("attention.value_length"),
        vocab_size=num("vocab_size") or meta.get("_vocab_size"),  # type: ignore[arg-type]
        file_type=meta.get("general.file_type") if isinstance(meta.get("general.file_type"), int) else None,
        name=meta.get("general.name") if isinstance(meta.get("general.name"), str) else None,
        chat_template=bool(meta.get("_chat_template")), header_bytes=r.pos,
    )


def read_header_file(path: str | Path) -> GGUFHeader:
    """Read the header of a GGUF file on disk."""
    try:
        with open(path, "rb") as fh:
            return read_header(fh)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
