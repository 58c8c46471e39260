"""Will a model fit? A pure estimate: weights + KV cache + compute buffers + runtime, against the board's RAM.

Jetson memory is shared by CPU and GPU, so the whole of it counts, less a reserve for the OS:
  weights  = the GGUF file size (mmap'd and offloaded; an estimate from the shape when the size is unknown)
  kv cache = layers x ctx x kv_heads x (key_dim + value_dim) x bytes per element (f16 2, q8_0 34/32, q4_0 18/32)
  compute  = logits (vocab x ubatch x 4) + attention scores without flash-attn (heads x ctx x ubatch x 4)
  runtime  = CUDA context and llama-server itself (fixed 400 MiB)
  reserve  = 12% of RAM, at least 512 MiB and at most 2 GiB (kernel, systemd, sshd, nvargus...)
  draft    = a speculative-decoding draft model in the same server: its weights + KV cache + compute
  prompt cache = llama-server's host-RAM cache of finished prompts (--cache-ram; llama.cpp's default, 8192 MiB,
             is more than an 8 GB board): set from the fit to half the headroom the models leave (at most 8192
             MiB, 0 below 256 MiB), or the --cache-ram given, and counted
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgekit.errors import UnsuitableDevice, UsageError
from edgekit.facts import boards

MiB = 2**20
GiB = 2**30
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
UBATCH = 512
RUNTIME_BYTES = 400 * MiB
CACHE_RAM_DEFAULT_MIB = 8192      # llama.cpp b11312's --cache-ram default (common.h cache_ram_mib)
CACHE_RAM_MIN_MIB = 256           # a smaller share is not worth it: the cache is off (0)
# bits per weight of llama.cpp's quantization mixes (for weights estimated from the shape)
BPW = {"f32": 32.0, "f16": 16.0, "q8_0": 8.5, "q6_k": 6.56, "q5_k": 5.67, "q5_0": 5.5, "q4_k": 4.85,
       "q4_k_m": 4.85, "q4_0": 4.55, "q3_k": 3.9, "q2_k": 3.35}

# Boards for `--board`: the boards whose RAM was captured on a real device (edgekit.facts.boards.BOARDS).
BOARDS = {b.slug: {"name": b.name, "total_bytes": b.ram_bytes} for b in boards.BOARDS if b.ram_bytes}


@dataclass(frozen=True)
class Shape:
    architecture: str
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    vocab_size: int
    context_length: int
    feed_forward_length: int = 0
    key_length: int = 0
    value_length: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "Shape":
        known = {k: d[k] for k in cls.__dataclass_fields__ if d.get(k) is not None}
        try:
            return cls(**known)
        except TypeError as e:
            raise UsageError(f"incomplete model shape: {e}") from None

    @classmethod
    def from_header(cls, h) -> "Shape":
        """From a gguf_header.GGUFHeader."""
        return cls.from_dict({k: getattr(h, k) for k in cls.__dataclass_fields__})

    @property
    def k_dim(self) -> int:
        return self.key_length or self.embedding_length // self.head_count

    @property
    def v_dim(self) -> int:
        return self.value_length or self.k_dim

    def kv_bytes_per_token(self, kv_type: str = "f16") -> float:
        return self.block_count * self.head_count_kv * (self.k_dim + self.v_dim) * KV_BYTES[kv_type]

    def parameters(self) -> int:
        """Approximate parameter count of a llama-style decoder (embeddings + output + layers)."""
        e, ff = self.embedding_length, self.feed_forward_length or 4 * self.embedding_length
        attn = e * self.head_count * self.k_dim + 2 * e * self.head_count_kv * self.k_dim \
            + self.head_count * self.v_dim * e
        return 2 * self.vocab_size * e + self.block_count * (attn + 3 * e * ff)


@dataclass
class FitReport:
    model: str
    quant: str
    board: str
    ctx: int
    kv_type: str
    total_bytes: int
    reserve_bytes: int
    weights_bytes: int
    weights_estimated: bool
    kv_bytes: int
    compute_bytes: int
    runtime_bytes: int
    fits: bool
    suggestions: list[str] = field(default_factory=list)
    draft: str = ""                   # NAME:QUANT of the draft model served with it ("" = none)
    draft_bytes: int = 0              # the draft's weights + KV cache + compute (the runtime is shared)
    cache_ram_bytes: int = 0          # the prompt cache bound (--cache-ram), counted
    cache_ram_from: str = "fit"       # "fit" (half the headroom) or "setting" (--cache-ram given)

    @property
    def model_bytes(self) -> int:
        """The model's own need: weights, KV cache, compute, runtime, and the draft's share."""
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.runtime_bytes + self.draft_bytes

    @property
    def need_bytes(self) -> int:
        return self.model_bytes + self.cache_ram_bytes

    @property
    def cache_ram_mib(self) -> int:
        return self.cache_ram_bytes // MiB

    @property
    def usable_bytes(self) -> int:
        return self.total_bytes - self.reserve_bytes

    @property
    def headroom_bytes(self) -> int:
        return self.usable_bytes - self.need_bytes

    def to_json(self) -> dict:
        return {**asdict(self), "need_bytes": self.need_bytes, "usable_bytes": self.usable_bytes,
                "headroom_bytes": self.headroom_bytes, "cache_ram_mib": self.cache_ram_mib}

    def summary(self) -> str:
        w = f"{'~' if self.weights_estimated else ''}{gib(self.weights_bytes)}"
        draft = f" + draft {self.draft} {gib(self.draft_bytes)}" if self.draft else ""
        if self.cache_ram_from == "setting":
            cache = f"prompt cache {self.cache_ram_mib} MiB (--cache-ram)"
        elif self.cache_ram_bytes:
            cache = f"prompt cache {self.cache_ram_mib} MiB (half the headroom)"
        else:
            cache = f"no prompt cache (--cache-ram 0: under {2 * CACHE_RAM_MIN_MIB} MiB headroom)"
        return (f"{self.model}:{self.quant} ctx {self.ctx} on {self.board}: needs {gib(self.need_bytes)} "
                f"(weights {w} + KV {self.kv_type} {gib(self.kv_bytes)} + compute {gib(self.compute_bytes)} "
                f"+ runtime {gib(self.runtime_bytes)}{draft} + {cache}) "
                f"of {gib(self.usable_bytes)} usable ({gib(self.total_bytes)} RAM - {gib(self.reserve_bytes)} "
                "OS reserve)")


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def loadable_together(needs: list[int], usable_bytes: int) -> int:
    """Router mode: how many of these models can stay loaded at once, whichever were used last. Each model runs in
    its own llama-server process, so each need counts whole (runtime included). The answer holds for ANY choice
    of that many: the largest needs are summed. 0 when even the largest alone does not fit."""
    total, count = 0, 0
    for need in sorted(needs, reverse=True):
        if total + need > usable_bytes:
            break
        total, count = total + need, count + 1
    return count


def prompt_cache_mib(headroom_bytes: int) -> int:
    """The prompt-cache bound the fit sets (--cache-ram, MiB): half the headroom the models leave, in steps of
    64 MiB, at most llama.cpp's own default; 0 (no cache) when that is under CACHE_RAM_MIN_MIB."""
    share = min(max(headroom_bytes, 0) // 2 // MiB // 64 * 64, CACHE_RAM_DEFAULT_MIB)
    return share if share >= CACHE_RAM_MIN_MIB else 0


def bound_cache(report: FitReport, cache_ram_mib: int | None = None) -> FitReport:
    """Count the prompt cache in `report`: `cache_ram_mib` when given (--cache-ram), else the fit's share."""
    if cache_ram_mib is None:
        report.cache_ram_bytes, report.cache_ram_from = 0, "fit"
        report.cache_ram_bytes = prompt_cache_mib(report.usable_bytes - report.model_bytes) * MiB
    else:
        report.cache_ram_bytes, report.cache_ram_from = cache_ram_mib * MiB, "setting"
    report.fits = report.need_bytes <= report.usable_bytes
    return report


def usable_bytes(total_bytes: int) -> int:
    """RAM a model may take: all of it (unified memory) less the OS reserve."""
    return total_bytes - os_reserve(total_bytes)


def os_reserve(total_bytes: int) -> int:
    return int(min(max(0.12 * total_bytes, 512 * MiB), 2 * GiB))


def compute_bytes(shape: Shape, ctx: int, ubatch: int = UBATCH) -> int:
    return int(4 * ubatch * (shape.vocab_size + shape.head_count * ctx))


def weights_bytes(size: int, shape: Shape, quant: str) -> tuple[int, bool]:
    """The file size when known, else an estimate from the parameter count (returns (bytes, estimated))."""
    if size:
        return size, False
    bpw = BPW.get(quant.lower(), 8.5)
    return int(shape.parameters() * bpw / 8), True


def estimate(model: str, quant: str, size: int, shape: Shape, ctx: int, total_bytes: int,
             board: str = "device", kv_type: str = "f16") -> FitReport:
    """Pure: the memory a llama-server needs for this model and context, and whether it fits."""
    if kv_type not in KV_BYTES:
        raise UsageError(f"unknown KV cache type {kv_type!r}", hint=f"use one of {', '.join(KV_BYTES)}")
    if ctx <= 0:
        raise UsageError(f"context must be positive, got {ctx}")
    w, estimated = weights_bytes(size, shape, quant)
    report = FitReport(model=model, quant=quant, board=board, ctx=ctx, kv_type=kv_type, total_bytes=total_bytes,
                       reserve_bytes=os_reserve(total_bytes), weights_bytes=w, weights_estimated=estimated,
                       kv_bytes=int(shape.kv_bytes_per_token(kv_type) * ctx),
                       compute_bytes=compute_bytes(shape, ctx), runtime_bytes=RUNTIME_BYTES, fits=False)
    report.fits = report.need_bytes <= report.usable_bytes
    return report


def _fits(quant: str, size: int, shape: Shape, ctx: int, total_bytes: int, kv_type: str, draft=None) -> bool:
    """Whether the model (and its draft: (entry, quant), at the same context) fits."""
    report = estimate("", quant, size, shape, ctx, total_bytes, kv_type=kv_type)
    return report.need_bytes + (draft_bytes(*draft, ctx, kv_type) if draft else 0) <= report.usable_bytes


def max_ctx(size: int, shape: Shape, quant: str, total_bytes: int, kv_type: str = "f16", draft=None) -> int:
    """The largest context (a multiple of 256, at most the model's own) that fits, with its draft; 0 when none."""
    lo, hi = 0, max(shape.context_length, 256) // 256
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits(quant, size, shape, mid * 256, total_bytes, kv_type, draft):
            lo = mid
        else:
            hi = mid - 1
    return lo * 256


def suggest(report: FitReport, size_of: dict[str, int], shape: Shape, draft=None) -> list[str]:
    """What would fit instead (with the draft, when there is one): a smaller context, a quantized KV cache, a
    smaller quantization; or no draft."""
    out = []
    spare = report.usable_bytes - report.model_bytes
    if report.cache_ram_from == "setting" and report.cache_ram_bytes and spare >= 0:
        return [f"--cache-ram {prompt_cache_mib(spare)} (the prompt cache the fit would set: the model fits, "
                f"{report.cache_ram_mib} MiB of cache next to it does not)"]
    if report.draft and spare < 0 and report.model_bytes - report.draft_bytes <= report.usable_bytes:
        out.append(f"no --draft (the draft {report.draft} takes {gib(report.draft_bytes)})")
    size = size_of[report.quant]
    c = max_ctx(size, shape, report.quant, report.total_bytes, report.kv_type, draft)
    if 512 <= c < report.ctx:
        out.append(f"--ctx {c} (the largest context that fits {report.model}:{report.quant}"
                   f"{' with its draft' if draft else ''})")
    for kv in ("q8_0", "q4_0"):
        if KV_BYTES[kv] < KV_BYTES[report.kv_type] and _fits(report.quant, size, shape, report.ctx,
                                                             report.total_bytes, kv, draft):
            out.append(f"--cache-type {kv} (a quantized KV cache fits ctx {report.ctx})")
            break
    for q, size in sorted(size_of.items(), key=lambda kv: kv[1] or 1 << 62):
        if q == report.quant:
            continue
        alt = estimate(report.model, q, size, shape, report.ctx, report.total_bytes, report.board, report.kv_type)
        if draft:
            alt.draft_bytes = draft_bytes(*draft, report.ctx, report.kv_type)
            alt.fits = alt.need_bytes <= alt.usable_bytes
        if alt.fits and alt.weights_bytes < report.weights_bytes:
            out.append(f"{report.model}:{q} (needs {gib(alt.need_bytes)} at ctx {report.ctx})")
            break
    if not out:
        out.append("a smaller model (see `edgekit models list`) or a board with more memory")
    return out


def draft_bytes(draft_entry, draft_quant, ctx: int, kv_type: str = "f16") -> int:
    """A draft model's share in the target's server: its weights, its KV cache at the target's context (llama-server
    gives the draft the target's context) and its compute buffers; the runtime is the target's."""
    shape = Shape.from_dict(draft_entry.shape)
    w, _ = weights_bytes(draft_quant.best_size, shape, draft_quant.name)
    return w + int(shape.kv_bytes_per_token(kv_type) * ctx) + compute_bytes(shape, ctx)


def check_entry(entry, quant, ctx: int | None, total_bytes: int, board: str = "device",
                kv_type: str = "f16", cache_ram_mib: int | None = None, draft=None) -> FitReport:
    """Fit of a catalog entry + quant (and a draft: (entry, quant), served with it), the prompt cache bounded
    (cache_ram_mib, else the fit's share); suggestions filled when it does not fit."""
    shape = Shape.from_dict(entry.shape)
    report = estimate(entry.name, quant.name, quant.best_size, shape,
                      ctx or entry.recommended_ctx, total_bytes, board, kv_type)
    if draft is not None:
        report.draft = f"{draft[0].name}:{draft[1].name}"
        report.draft_bytes = draft_bytes(draft[0], draft[1], report.ctx, kv_type)
    bound_cache(report, cache_ram_mib)
    if not report.fits:
        report.suggestions = suggest(report, {q.name: q.best_size for q in entry.quants.values()}, shape, draft)
    return report


def require_fit(report: FitReport, force: bool = False, force_flag: bool = True) -> None:
    """Raise UnsuitableDevice with the numbers and suggestions unless the model fits (or force).

    force_flag: the command printing the hint has --force (the hint then offers it).
    """
    if report.fits or force:
        return
    short = report.need_bytes - report.usable_bytes
    raise UnsuitableDevice(
        f"{report.summary()}: {gib(short)} short",
        hint="try " + "; or ".join(report.suggestions)
             + (" — or pass --force to install anyway" if force_flag else ""))


def board_total(slug: str) -> tuple[str, int]:
    """(name, RAM bytes) of a board in BOARDS, by its slug."""
    b = boards.board(slug)
    if b is None or b.slug not in BOARDS:
        raise UsageError(f"unknown board {slug!r}", hint=f"use one of: {', '.join(BOARDS)}")
    return b.name, b.ram_bytes


def default_ctx(entry, quant, total_bytes: int, kv_type: str = "f16", draft=None) -> int:
    """The entry's recommended context, lowered to the largest that fits this board with the draft, if any (never
    below 512)."""
    shape = Shape.from_dict(entry.shape)
    fitting = max_ctx(quant.best_size, shape, quant.name, total_bytes, kv_type, draft)
    return min(entry.recommended_ctx, fitting) if fitting >= 512 else entry.recommended_ctx
