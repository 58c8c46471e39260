"""A tiny llama GGUF written with the standard library alone: the model the build gate runs.

2 layers, 64-wide, f32 random weights (fixed seed, so the same bytes every time: its sha256 is stable), and a
byte-level SentencePiece vocabulary (<unk> <s> </s>, the 256 byte tokens, printable ASCII). About 400 KB: small
enough to upload to every device, real enough that llama.cpp loads it, offloads every layer to a GPU and
generates with it. No `gguf`/`numpy` needed on the controller.
"""

from __future__ import annotations

import hashlib
import random
import struct
from array import array
from pathlib import Path

SHAPE = {"n_embd": 64, "n_ff": 128, "n_head": 4, "n_head_kv": 2, "n_layer": 2, "n_ctx": 512}
ALIGN = 32
_U32, _I32, _F32, _BOOL, _STR, _ARR, _U64 = 4, 5, 6, 7, 8, 9, 10
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, kind: int, value) -> bytes:
    out = _s(key) + struct.pack("<I", kind)
    if kind == _STR:
        return out + _s(value)
    if kind == _ARR:
        sub, items = value
        out += struct.pack("<IQ", sub, len(items))
        if sub == _STR:
            return out + b"".join(_s(i) for i in items)
        return out + array({_F32: "f", _I32: "i"}[sub], items).tobytes()
    fmt = {_U32: "<I", _I32: "<i", _F32: "<f", _BOOL: "<?", _U64: "<Q"}[kind]
    return out + struct.pack(fmt, value)


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581"] + \
             [chr(c) for c in range(0x21, 0x7F)]
    types = [_UNKNOWN, _CONTROL, _CONTROL] + [_BYTE] * 256 + [_NORMAL] * (len(tokens) - 259)
    scores = [0.0] * 259 + [-float(i) for i in range(len(tokens) - 259)]
    return tokens, scores, types


def tiny_llama_bytes(seed: int = 0, **header: int) -> bytes:
    """The whole GGUF file (v3) as bytes; deterministic for a seed. `header` overrides llama.* numbers written
    in the header only (tests use it for a file whose header and tensors disagree: it loads nowhere)."""
    s = SHAPE
    tokens, scores, types = vocabulary()
    e, ff, hd, nv = s["n_embd"], s["n_ff"], s["n_embd"] // s["n_head"], len(tokens)
    kvs = [
        _kv("general.architecture", _STR, "llama"), _kv("general.name", _STR, "edgekit gate tiny-llama"),
        _kv("general.file_type", _U32, 0), _kv("llama.context_length", _U32, s["n_ctx"]),
        _kv("llama.embedding_length", _U32, e), _kv("llama.block_count", _U32, s["n_layer"]),
        _kv("llama.feed_forward_length", _U32, ff),
        _kv("llama.attention.head_count", _U32, header.get("head_count", s["n_head"])),
        _kv("llama.attention.head_count_kv", _U32, s["n_head_kv"]), _kv("llama.rope.dimension_count", _U32, hd),
        _kv("llama.attention.layer_norm_rms_epsilon", _F32, 1e-5), _kv("llama.vocab_size", _U32, nv),
        _kv("tokenizer.ggml.model", _STR, "llama"), _kv("tokenizer.ggml.tokens", _ARR, (_STR, tokens)),
        _kv("tokenizer.ggml.scores", _ARR, (_F32, scores)), _kv("tokenizer.ggml.token_type", _ARR, (_I32, types)),
        _kv("tokenizer.ggml.bos_token_id", _U32, 1), _kv("tokenizer.ggml.eos_token_id", _U32, 2),
        _kv("tokenizer.ggml.unknown_token_id", _U32, 0), _kv("tokenizer.ggml.add_bos_token", _BOOL, True),
    ]
    # (name, ne) with ne[0] the row length, as GGUF stores dimensions
    tensors = [("token_embd.weight", (e, nv)), ("output_norm.weight", (e,))]
    for i in range(s["n_layer"]):
        tensors += [(f"blk.{i}.attn_norm.weight", (e,)), (f"blk.{i}.attn_q.weight", (e, e)),
                    (f"blk.{i}.attn_k.weight", (e, s["n_head_kv"] * hd)),
                    (f"blk.{i}.attn_v.weight", (e, s["n_head_kv"] * hd)), (f"blk.{i}.attn_output.weight", (e, e)),
                    (f"blk.{i}.ffn_norm.weight", (e,)), (f"blk.{i}.ffn_gate.weight", (e, ff)),
                    (f"blk.{i}.ffn_up.weight", (e, ff)), (f"blk.{i}.ffn_down.weight", (ff, e))]
    rng = random.Random(seed)
    infos, blobs, offset = [], [], 0
    for name, ne in tensors:
        count = 1
        for d in ne:
            count *= d
        values = [1.0] * count if name.endswith("norm.weight") else [rng.gauss(0.0, 0.02) for _ in range(count)]
        blob = array("f", values).tobytes()
        infos.append(_s(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne) +
                     struct.pack("<IQ", 0, offset))
        pad = (-len(blob)) % ALIGN
        blobs.append(blob + b"\0" * pad)
        offset += len(blob) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += b"\0" * ((-len(head)) % ALIGN)
    return head + b"".join(blobs)


def write_tiny_llama(path: Path, seed: int = 0) -> Path:
    path.write_bytes(tiny_llama_bytes(seed))
    return path


def tiny_llama_sha256(seed: int = 0) -> str:
    return hashlib.sha256(tiny_llama_bytes(seed)).hexdigest()
