"""Read and check the header of a GGUF file, streaming: no numpy, no tensor data, arrays skipped.

`read_header` keeps only what the fit check needs: architecture, block count, context length, head counts,
embedding length, key/value lengths, feed-forward length, vocabulary size and the file type. It stops at the
end of the key/value section, so a 5 GB model costs a few MB of reading (the tokenizer arrays are skipped).

`check_file` checks a whole file before it is installed (llama.cpp has had GGUF parser CVEs: a truncated or
foreign file must never reach the server): the magic, version 2 or 3, counts the file can hold, every key/value
parsed inside the file (no nested arrays, no duplicate keys, a power-of-two `general.alignment`), every tensor
info parsed (name, at most 4 dimensions, a known ggml type, rows a whole number of blocks, an aligned offset),
and every tensor's data inside the file. It reads the header and the tensor infos, never the tensor data.

Python 3.8+ standard library only: it also runs on the device, as the helper's `gguf FILE` (edgekit.remote.helper),
which prints `device_report`'s event.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import BinaryIO

try:
    from edgekit.errors import UsageError
except ImportError:                      # in the helper on the device: only the standard library is there
    class UsageError(Exception):         # type: ignore[no-redef]
        def __init__(self, message, hint=None):
            super().__init__(message)
            self.message, self.hint = message, hint

MAGIC = b"GGUF"

# GGUF value types
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
_SCALAR = {_U8: "<B", _I8: "<b", _U16: "<H", _I16: "<h", _U32: "<I", _I32: "<i", _F32: "<f", _BOOL: "<?",
           _U64: "<Q", _I64: "<q", _F64: "<d"}
_MAX_STRING = 1 << 24       # a key or scalar string longer than this means a corrupt header
_MAX_KV = 1 << 20
_MAX_TENSORS = 1 << 20
_MAX_DIMS = 4               # GGML_MAX_DIMS
_MAX_NAME = 63              # GGML_MAX_NAME is 64 bytes with the terminating NUL
_DEFAULT_ALIGNMENT = 32
_MAX_NESTING = 8            # arrays of arrays (version-1 files and read_header only): deeper means corrupt
_INT64_MAX = (1 << 63) - 1
# ggml type id -> (elements per block, bytes per block), as ggml's type traits (gguf-py's GGML_QUANT_SIZES, but
# q8_1 as ggml's block_q8_1: 2 halves + 32 bytes);
# ids 4, 5 and 31-33, 36-38 were removed from ggml and are refused like any unknown id.
GGML_TYPES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}
_REDOWNLOAD = "the file is incomplete or not a GGUF model; download it again, or check the URL"


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
    alignment: int = _DEFAULT_ALIGNMENT
    file_size: int | None = None     # set by check(): the whole file was checked against this size
    data_offset: int | None = None   # set by check(): where the tensor data starts
    tokenizer: dict | None = None    # set by check() and read_header(tokenizer=True): drafts.Tokenizer's fields

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "GGUFHeader":
        """From to_json()'s dict (e.g. the device's report); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

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


# What a speculative draft must share with its target besides the tokens (llama.cpp's checks: type, BOS/EOS).
TOKENIZER_KEYS = ("model", "bos_token_id", "eos_token_id", "add_bos_token", "add_eos_token")


class _Reader:
    """Reads a stream; with `size` every read is first checked against the end of the file (and skips seek)."""

    def __init__(self, fh: BinaryIO, size: int | None = None):
        self.fh = fh
        self.pos = 0
        self.size = size

    def need(self, n: int, what: str) -> None:
        if self.size is not None and n > self.size - self.pos:
            raise GGUFError(f"truncated GGUF: {what} at offset {self.pos} needs {n} bytes, but the file ends at "
                            f"{self.size}", hint=_REDOWNLOAD)

    def read(self, n: int, what: str = "the header") -> bytes:
        self.need(n, what)
        data = self.fh.read(n)
        if len(data) != n:
            raise GGUFError(f"truncated GGUF header: wanted {n} bytes at offset {self.pos}, got {len(data)}",
                            hint=_REDOWNLOAD)
        self.pos += n
        return data

    def skip(self, n: int, what: str = "a value") -> None:
        if self.size is not None:
            self.need(n, what)
            self.fh.seek(n, os.SEEK_CUR)
            self.pos += n
            return
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

    def i64(self) -> int:
        return struct.unpack("<q", self.read(8))[0]

    def _length(self) -> int:
        n = self.u64()
        if n > _MAX_STRING:
            raise GGUFError(f"corrupt GGUF header: string of {n} bytes at offset {self.pos}", hint=_REDOWNLOAD)
        return n

    def string(self, what: str = "a string") -> str:
        return self.read(self._length(), what).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.skip(self._length(), "a string")

    def digest_array(self) -> tuple[int, str]:
        """An array hashed, not kept: (length, sha256 of the items: strings length-prefixed, scalars as stored)."""
        itype, count, h = self.u32(), self.u64(), hashlib.sha256()
        if itype not in _SCALAR and itype != _STR or count > _MAX_STRING:
            raise GGUFError(f"corrupt GGUF header: a tokenizer array of {count} items of type {itype} at offset "
                            f"{self.pos}", hint=_REDOWNLOAD)
        self.need((8 if itype == _STR else struct.calcsize(_SCALAR[itype])) * count, f"an array of {count} items")
        for _ in range(count if itype == _STR else 0):
            n = self._length()
            h.update(struct.pack("<Q", n) + self.read(n, "a string"))
        if itype in _SCALAR:
            h.update(self.read(struct.calcsize(_SCALAR[itype]) * count, f"an array of {count} items"))
        return count, h.hexdigest()


def _value(r: _Reader, vtype: int, keep: bool, strict: bool = False):
    """Read one value; arrays are skipped (their length is returned), strings kept only when asked.

    strict: refuse what llama.cpp refuses (arrays of arrays) and arrays longer than the rest of the file."""
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
            r.skip(struct.calcsize(_SCALAR[itype]) * count, f"an array of {count} items")
        elif itype == _STR:
            r.need(8 * count, f"an array of {count} strings")
            for _ in range(count):
                r.skip_string()
        elif itype == _ARR and not strict:
            _skip_nested(r, count)
        else:
            what = "an array of arrays" if itype == _ARR else f"unknown array item type {itype}"
            raise GGUFError(f"corrupt GGUF header: {what} at offset {r.pos}", hint=_REDOWNLOAD)
        return count
    raise GGUFError(f"corrupt GGUF header: unknown value type {vtype} at offset {r.pos}", hint=_REDOWNLOAD)


def _skip_nested(r: _Reader, count: int) -> None:
    """Skip `count` arrays (the items of an array of arrays) without recursion; deeper than _MAX_NESTING is an
    error (a crafted file must not exhaust Python's stack)."""
    pending = [count]                  # arrays still to skip, per level
    while pending:
        if not pending[-1]:
            pending.pop()
            continue
        pending[-1] -= 1
        itype, n = r.u32(), r.u64()
        if itype == _ARR:
            if len(pending) >= _MAX_NESTING:
                raise GGUFError(f"corrupt GGUF header: arrays nested more than {_MAX_NESTING} deep at offset "
                                f"{r.pos}", hint=_REDOWNLOAD)
            pending.append(n)
        elif itype in _SCALAR:
            r.skip(struct.calcsize(_SCALAR[itype]) * n, f"an array of {n} items")
        elif itype == _STR:
            for _ in range(n):
                r.skip_string()
        else:
            raise GGUFError(f"corrupt GGUF header: unknown array item type {itype} at offset {r.pos}",
                            hint=_REDOWNLOAD)


def _read(r: _Reader, strict: bool, tokenizer: bool = False) -> GGUFHeader:
    magic = r.read(4)
    if magic != MAGIC:
        raise GGUFError(f"not a GGUF file (magic {magic!r}, expected b'GGUF')",
                        hint="check the file name and quantization; edgekit serves GGUF models only")
    version = r.u32()
    if version == 1 and not strict:
        tensor_count, kv_count = r.u32(), r.u32()
    elif version in (2, 3):
        tensor_count, kv_count = r.u64(), r.u64()
    else:
        raise GGUFError(f"unsupported GGUF version {version}", hint="re-convert the model with a current llama.cpp")
    if kv_count > _MAX_KV or (strict and kv_count * 13 > r.size - r.pos):   # key length, type, 1 byte at least
        raise GGUFError(f"corrupt GGUF header: {kv_count} metadata entries", hint=_REDOWNLOAD)
    if strict and (tensor_count > _MAX_TENSORS or tensor_count * 24 > r.size - r.pos):
        raise GGUFError(f"corrupt GGUF header: {tensor_count} tensors", hint=_REDOWNLOAD)
    meta: dict[str, object] = {}
    seen: set[str] = set()
    alignment = _DEFAULT_ALIGNMENT
    for _ in range(kv_count):
        key = r.string("a metadata key")
        if strict:
            if key in seen:
                raise GGUFError(f"corrupt GGUF header: duplicate key {key!r}", hint=_REDOWNLOAD)
            seen.add(key)
        vtype = r.u32()
        if tokenizer and vtype == _ARR and key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
            count, meta["_tokens" if key.endswith("tokens") else "_types"] = r.digest_array()
            meta["_vocab_size" if key.endswith("tokens") else "_types_count"] = count
            continue
        wanted = key.startswith("general.") or "." in key and not key.startswith("tokenizer.") or (
            tokenizer and key.startswith("tokenizer.ggml.") and key[15:] in TOKENIZER_KEYS)
        value = _value(r, vtype, keep=wanted, strict=strict)
        if key == "general.alignment":
            if vtype != _U32 or not value or value & (value - 1):
                raise GGUFError(f"corrupt GGUF header: general.alignment {value!r} (type {vtype}) is not a "
                                "power of two stored as uint32", hint=_REDOWNLOAD)
            alignment = value
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
        if isinstance(v, float) and not (v == v and abs(v) < 2 ** 63):   # NaN, infinities, huge: not a size
            return None
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    tok = {"vocab_size": meta.get("_vocab_size"), "tokens_sha256": meta.get("_tokens"), "types_sha256": meta.get(
        "_types"), "settings": {k: meta[f"tokenizer.ggml.{k}"] for k in TOKENIZER_KEYS if isinstance(meta.get(
            f"tokenizer.ggml.{k}"), (int, str, bool))}} if tokenizer else None   # what drafts.Tokenizer reads
    return GGUFHeader(
        tokenizer=tok, version=version, tensor_count=tensor_count, architecture=arch,
        block_count=num("block_count"), context_length=num("context_length"),
        embedding_length=num("embedding_length"), feed_forward_length=num("feed_forward_length"),
        head_count=num("attention.head_count"),
        head_count_kv=num("attention.head_count_kv") or num("attention.head_count"),
        key_length=num("attention.key_length"), value_length=num("attention.value_length"),
        vocab_size=num("vocab_size") or meta.get("_vocab_size"),  # type: ignore[arg-type]
        file_type=meta.get("general.file_type") if isinstance(meta.get("general.file_type"), int) else None,
        name=meta.get("general.name") if isinstance(meta.get("general.name"), str) else None,
        chat_template=bool(meta.get("_chat_template")), header_bytes=r.pos, alignment=alignment,
    )


def read_header(fh: BinaryIO, tokenizer: bool = False) -> GGUFHeader:
    """Read a GGUF header from a binary stream at the start of the file (`tokenizer`: hash the token list too)."""
    return _read(_Reader(fh), strict=False, tokenizer=tokenizer)


def check(fh: BinaryIO, size: int) -> GGUFHeader:
    """Check the structure of a whole GGUF of `size` bytes (see the module doc); GGUFError names the first problem.

    `fh` is a seekable binary stream at the start of the file; only the header and tensor infos are read."""
    r = _Reader(fh, size)
    header = _read(r, strict=True, tokenizer=True)
    if header.tensor_count == 0:
        raise GGUFError("the GGUF has no tensors (a vocabulary-only file, not a model)",
                        hint="check the URL: it should name a model's .gguf file")
    tensors = []
    names: set[str] = set()
    for i in range(header.tensor_count):
        name = r.string(f"the name of tensor {i}")
        if len(name.encode("utf-8")) > _MAX_NAME:
            raise GGUFError(f"corrupt GGUF: tensor {i} has a name of {len(name)} characters (at most {_MAX_NAME})",
                            hint=_REDOWNLOAD)
        if name in names:
            raise GGUFError(f"corrupt GGUF: duplicate tensor {name!r}", hint=_REDOWNLOAD)
        names.add(name)
        n_dims = r.u32()
        if n_dims > _MAX_DIMS:
            raise GGUFError(f"corrupt GGUF: tensor {name!r} has {n_dims} dimensions (at most {_MAX_DIMS})",
                            hint=_REDOWNLOAD)
        ne = [r.i64() for _ in range(n_dims)]
        ggml_type = r.u32()
        offset = r.u64()
        elements = 1
        for d in ne:
            if d < 0:
                raise GGUFError(f"corrupt GGUF: tensor {name!r} has a negative dimension {ne}", hint=_REDOWNLOAD)
            elements *= d
        if elements > _INT64_MAX:
            raise GGUFError(f"corrupt GGUF: tensor {name!r} has too many elements {ne}", hint=_REDOWNLOAD)
        if ggml_type not in GGML_TYPES:
            raise GGUFError(f"GGUF tensor {name!r} has ggml type {ggml_type}, which this edgekit does not know",
                            hint="a corrupt file, or a quantization newer than edgekit; try another quantization")
        block, block_bytes = GGML_TYPES[ggml_type]
        if ne and ne[0] % block:
            raise GGUFError(f"corrupt GGUF: tensor {name!r} rows of {ne[0]} elements are not whole blocks of "
                            f"{block}", hint=_REDOWNLOAD)
        if offset % header.alignment:
            raise GGUFError(f"corrupt GGUF: tensor {name!r} data offset {offset} is not aligned to "
                            f"{header.alignment} bytes", hint=_REDOWNLOAD)
        tensors.append((name, offset, elements // block * block_bytes))
    data_offset = -(-r.pos // header.alignment) * header.alignment
    for name, offset, nbytes in tensors:
        end = data_offset + offset + nbytes
        if end > size:
            raise GGUFError(f"truncated GGUF: tensor {name!r} ({nbytes} bytes at offset {data_offset + offset}) "
                            f"ends at byte {end}, past the end of the file ({size} bytes)", hint=_REDOWNLOAD)
    header.file_size, header.data_offset = size, data_offset
    return header


def read_header_file(path: str | Path, tokenizer: bool = False) -> GGUFHeader:
    """Read the header of a GGUF file on disk."""
    try:
        with open(path, "rb") as fh:
            return read_header(fh, tokenizer)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None


def check_file(path: str | Path) -> GGUFHeader:
    """Check a GGUF file on disk (see check); GGUFError when it is not a valid GGUF, UsageError when unreadable."""
    try:
        with open(path, "rb") as fh:
            return check(fh, os.fstat(fh.fileno()).st_size)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None


def device_report(path: str) -> tuple[dict, int]:
    """What the device prints for one file, and the exit code: {"event": "gguf", <header fields>} (0) for a valid
    GGUF, {"event": "missing", "path"} (0) when there is no such file, {"event": "error", "kind": "gguf"|"io",
    "message"} (3) otherwise."""
    if not os.path.isfile(path):
        return {"event": "missing", "path": path}, 0
    try:
        header = check_file(path)
    except GGUFError as e:
        return {"event": "error", "kind": "gguf", "message": e.message}, 3
    except UsageError as e:
        return {"event": "error", "kind": "io", "message": e.message}, 3
    return {"event": "gguf", **header.to_json()}, 0
