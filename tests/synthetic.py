"""A tiny synthetic llama GGUF for fast end-to-end tests: 2 layers, random weights, a real tokenizer.

The tokenizer (llama SentencePiece, 32000 tokens) is copied from llama.cpp's own vocab-only file
`models/ggml-vocab-llama-spm.gguf`, read out of the llama-cpp-python sdist the tests already fetch. Needs
the `gguf` and `numpy` packages (test extras). Deterministic: the same seed gives the same bytes.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

VOCAB_MEMBER = "vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"
SHAPE = {"n_embd": 64, "n_ff": 128, "n_head": 4, "n_head_kv": 2, "n_layer": 2, "n_ctx": 512}


def extract_vocab(sdist: Path, dest_dir: Path) -> Path:
    """Pull ggml-vocab-llama-spm.gguf out of the llama-cpp-python sdist."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(VOCAB_MEMBER))
        member.name = Path(member.name).name
        tar.extract(member, dest_dir, filter="data")
    return dest_dir / member.name


def write_tiny_llama(out: Path, vocab_gguf: Path, seed: int = 0) -> Path:
    """Write a 2-layer llama GGUF (f32, ~9 MB; output tied to token_embd) for llama.cpp; returns out."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    rng = np.random.default_rng(seed)
    vocab = GGUFReader(str(vocab_gguf))
    s = SHAPE
    n_vocab = len(vocab.fields["tokenizer.ggml.tokens"].data)
    w = GGUFWriter(str(out), "llama")
    w.add_name("edgekit tiny-llama")
    w.add_context_length(s["n_ctx"])
    w.add_embedding_length(s["n_embd"])
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(s["n_ff"])
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_head_kv"])
    w.add_rope_dimension_count(s["n_embd"] // s["n_head"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)   # all f32
    w.add_vocab_size(n_vocab)
    for name, field in vocab.fields.items():
        if not name.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == GGUFValueType.STRING:
                values = [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            w.add_array(name, values)
        elif kind == GGUFValueType.STRING:
            w.add_string(name, bytes(field.parts[field.data[0]]).decode("utf-8"))
        else:
            w.add_key_value(name, field.parts[field.data[0]].tolist()[0], kind)

    def t(name: str, *shape: int, ones: bool = False) -> None:
        data = np.ones(shape, np.float32) if ones else (rng.standard_normal(shape) * 0.02).astype(np.float32)
        w.add_tensor(name, data)

    e, ff, hd = s["n_embd"], s["n_ff"], s["n_embd"] // s["n_head"]
    t("token_embd.weight", n_vocab, e)
    t("output_norm.weight", e, ones=True)
    for i in range(s["n_layer"]):
        t(f"blk.{i}.attn_norm.weight", e, ones=True)
        t(f"blk.{i}.attn_q.weight", e, e)
        t(f"blk.{i}.attn_k.weight", s["n_head_kv"] * hd, e)
        t(f"blk.{i}.attn_v.weight", s["n_head_kv"] * hd, e)
        t(f"blk.{i}.attn_output.weight", e, e)
        t(f"blk.{i}.ffn_norm.weight", e, ones=True)
        t(f"blk.{i}.ffn_gate.weight", ff, e)
        t(f"blk.{i}.ffn_up.weight", ff, e)
        t(f"blk.{i}.ffn_down.weight", e, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def tiny_llama_from_sdist(sdist: Path, out: Path, seed: int = 0) -> Path:
    with tempfile.TemporaryDirectory() as d:
        return write_tiny_llama(out, extract_vocab(sdist, Path(d)), seed)
