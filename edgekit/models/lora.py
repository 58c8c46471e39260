"""LoRA adapters served with their base model (`--lora FILE[:SCALE]`): checked to belong to the base before they
are installed, pinned by sha256 in edgekit.lock, uploaded next to the models, passed to llama-server.

An adapter is a GGUF whose tensors come in pairs `<base tensor>.lora_a` / `.lora_b`: for a base weight that maps
`in` features to `out` (ggml ne = [in, out]), lora_a has ne = [in, rank] and lora_b ne = [rank, out]. It belongs to
a base when its `general.architecture` is the base's and every pair's in/out match the base's tensor of that name,
as the base's shape (its GGUF header, or the catalog's) gives them. llama.cpp refuses a mismatch only when the
server starts (and the service then fails); edgekit refuses it before anything is installed, naming it.

b11312 reads --lora-scaled from no environment variable: the env file's EDGEKIT_SERVER_ARGS carries it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgekit import layout as L
from edgekit import lockfile
from edgekit.errors import UsageError
from edgekit.models import fit
from edgekit.models.gguf_header import GGUFError, _read, _Reader, check_file
from edgekit.remote.command import Upload, sh
from edgekit.remote.plan import Context, Noop, Change
from edgekit.facts.deployed import FileSha256

LORA_DIR = L.LORA_DIR
_SCALE = re.compile(r"^(.*?):(-?[0-9]+(?:\.[0-9]+)?)$")
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.weight\.lora_([ab])$")
_OWN = re.compile(r"^(token_embd|output)\.weight\.lora_([ab])$")


class AdapterMismatch(UsageError):
    """A LoRA adapter made for another base model: refused before it is installed."""


@dataclass(frozen=True)
class Adapter:
    path: str
    name: str                            # its file name
    sha256: str
    architecture: str | None
    scale: float
    tensors: tuple                       # ((name, (ne0, ne1, ...)), ...)
    base: str = ""                       # the model it was checked against

    @property
    def device_path(self) -> str:
        return f"{LORA_DIR}/{self.sha256[:12]}-{self.name}"

    @property
    def server_arg(self) -> str:
        return f"--lora-scaled {self.device_path}:{self.scale:g}"


def parse(text: str) -> tuple[str, float]:
    """'FILE[:SCALE]' -> (FILE, SCALE); the scale defaults to 1."""
    m = _SCALE.match(text)
    path, scale = (m[1], float(m[2])) if m else (text, 1.0)
    if "://" in path:
        raise UsageError(f"--lora {text}: only a file on this machine is served for now, not a URL",
                         hint="download the adapter, check its sha256, and pass the file: --lora ./adapter.gguf:1")
    return path, scale


def _tensor_shapes(path: str) -> tuple:
    """The adapter's tensor names and dimensions (after check_file accepted the file's structure)."""
    with open(path, "rb") as fh:
        r = _Reader(fh, os.fstat(fh.fileno()).st_size)
        header = _read(r, strict=True)
        out = []
        for _ in range(header.tensor_count):
            name = r.string("a tensor name")
            ne = tuple(r.i64() for _ in range(r.u32()))
            r.u32(), r.u64()
            out.append((name, ne))
    return tuple(out)


def read_adapter(text: str) -> Adapter:
    """The adapter named by --lora FILE[:SCALE]: a valid GGUF of lora_a/lora_b pairs, hashed."""
    path, scale = parse(text)
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"--lora {path}: no such file", hint="give the adapter's .gguf file on this machine")
    try:
        header = check_file(file)
    except GGUFError as e:
        raise GGUFError(f"--lora {path} is not a valid GGUF: {e.message}", hint=e.hint) from None
    tensors = _tensor_shapes(str(file))
    odd = [n for n, _ in tensors if not (_BLOCK.match(n) or _OWN.match(n))]
    if odd:
        raise UsageError(f"--lora {path} is not a LoRA adapter: tensor {odd[0]!r} is not a <weight>.lora_a/_b",
                         hint="convert the adapter with llama.cpp's convert_lora_to_gguf.py")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return Adapter(str(file), file.name, digest, header.architecture, scale, tensors)


def _in_out(shape: fit.Shape, weight: str) -> tuple[int, int] | None:
    """(in, out) features of a base weight by its GGUF name (attn_q, ffn_down, ...); None for one not modelled."""
    e, ff = shape.embedding_length, shape.feed_forward_length or 4 * shape.embedding_length
    q, kv, vo = shape.head_count * shape.k_dim, shape.head_count_kv * shape.k_dim, shape.head_count_kv * shape.v_dim
    return {"attn_q": (e, q), "attn_k": (e, kv), "attn_v": (e, vo), "attn_output": (shape.head_count * shape.v_dim, e),
            "ffn_gate": (e, ff), "ffn_up": (e, ff), "ffn_down": (ff, e)}.get(weight)


def mismatches(adapter: Adapter, shape: fit.Shape) -> list[str]:
    """Pure: what makes `adapter` not belong to a base of `shape` (empty: it belongs)."""
    out = []
    if adapter.architecture != shape.architecture:
        out.append(f"architecture {adapter.architecture} vs the base's {shape.architecture}")
    for name, ne in adapter.tensors:
        m = _BLOCK.match(name)
        if not m:
            continue
        block, weight, half = int(m[1]), m[2], m[3]
        if block >= shape.block_count:
            out.append(f"{name}: block {block}, the base has {shape.block_count}")
            continue
        want = _in_out(shape, weight)
        if want is None or len(ne) != 2:
            continue
        got, expect = (ne[0], want[0]) if half == "a" else (ne[1], want[1])
        if got != expect:
            side = "in" if half == "a" else "out"
            out.append(f"{name}: {side} features {got}, the base's {weight} has {expect}")
    return out


def check_base(adapter: Adapter, shape: fit.Shape, base: str) -> str:
    """Refuse (AdapterMismatch) an adapter that is not for `base`; else what was compared."""
    found = mismatches(adapter, shape)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise AdapterMismatch(f"{adapter.name} is not an adapter for {base}: {'; '.join(found[:3])}{more}",
                              hint=f"use an adapter trained on {base}, or serve the base it was trained on")
    pairs = sum(1 for n, _ in adapter.tensors if n.endswith(".lora_a"))
    return f"{adapter.name} fits {base} ({shape.architecture}, {pairs} adapted weights), scale {adapter.scale:g}"


class LoraFile:
    """The adapter is on the device (layout: <prefix>/loras/<sha12>-<file>), its bytes those checked."""

    def __init__(self, adapter: Adapter, lock_file: str | None = None):
        self.adapter, self.lock_file = adapter, lock_file
        self.name = f"lora adapter: {adapter.name}"

    def plan(self, ctx: Context):
        a = self.adapter
        lock_name = f"{a.base}/{a.name}"
        lockfile.check("lora", lock_name, a.sha256, self.lock_file)     # the bytes edgekit.lock recorded, if any
        if ctx.fact(FileSha256(a.device_path)) == a.sha256:
            if not ctx.dry_run:
                lockfile.check_or_record("lora", lock_name, a.sha256, a.path, self.lock_file)
            return Noop(f"{a.device_path} present, sha256 {a.sha256[:12]}… verified")
        ops = [sh("install", "-d", "-m", "0755", LORA_DIR),
               Upload(a.device_path, local=a.path, mode="0644", sha256=a.sha256)]

        def apply(c: Context) -> None:
            for op in ops:
                c.do(op)
            lockfile.check_or_record("lora", lock_name, a.sha256, a.path, self.lock_file)

        return Change(f"install {a.name} for {a.base} as {a.device_path}", ops, apply)
