"""The fixed, versioned bench workload. Change a number here -> bump VERSION and regenerate
benchmarks/workload.toml (`python -m edgekit.bench.workload > benchmarks/workload.toml`; a test checks they match).

Two sweeps: prompt length at concurrency 1 (tok/s vs context), and concurrency at one prompt length
(tok/s vs parallel slots). Prompts are token ids cut from one fixed text, so every model gets exactly the
asked-for prompt length; `cache_prompt` is off so every repetition processes its prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import List

VERSION = 2        # 2: llama-bench side by side over 5 rounds (was 3)

# Deterministic filler: tokenized on the server once; ids are repeated/cut to the wanted length.
PROMPT_TEXT = (
    "The history of computing is a history of trade-offs between memory, bandwidth and arithmetic. "
    "Early machines were limited by how fast they could move numbers from storage into registers, "
    "and the same is true of language models running on small boards today. Each generated token "
    "needs every weight of the model to pass through the memory controller once, so the speed of "
    "decoding is set by bandwidth, while reading a long prompt is set by arithmetic throughput. "
)


@dataclass(frozen=True)
class Case:
    """One measured configuration."""

    sweep: str           # "context" or "concurrency"
    prompt_tokens: int
    concurrency: int

    @property
    def name(self) -> str:
        return f"p{self.prompt_tokens}-c{self.concurrency}"


@dataclass(frozen=True)
class Workload:
    version: int = VERSION
    prompt_lengths: List[int] = field(default_factory=lambda: [128, 512, 2048])
    concurrency_levels: List[int] = field(default_factory=lambda: [1, 2, 4])
    concurrency_prompt_tokens: int = 512
    gen_tokens: int = 128
    warmup: int = 1
    repetitions: int = 3
    temperature: float = 0.0
    seed: int = 42
    # llama-bench's matching tests: pp at this prompt length, tg with the same number of generated tokens
    llama_bench_pp: int = 512
    llama_bench_reps: int = 5        # report.MIN_ROUNDS: a median with a spread, or "within noise"
    quick: bool = False

    def cases(self) -> List[Case]:
        out = [Case("context", p, 1) for p in self.prompt_lengths]
        out += [Case("concurrency", self.concurrency_prompt_tokens, c) for c in self.concurrency_levels if c != 1]
        return out

    def needed_ctx(self, case: Case) -> int:
        """Context one slot needs for a case (prompt + generation)."""
        return case.prompt_tokens + self.gen_tokens

    def to_json(self) -> dict:
        return asdict(self)

    def to_toml(self) -> str:
        d = self.to_json()
        lines = [f"# edgekit bench workload v{self.version} (generated from edgekit/bench/workload.py)"]
        for key, value in d.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list):
                text = "[" + ", ".join(str(v) for v in value) + "]"
            else:
                text = repr(value) if not isinstance(value, str) else f'"{value}"'
            lines.append(f"{key} = {text}")
        return "\n".join(lines) + "\n"


DEFAULT = Workload()
# --quick: a smoke run (one short prompt sweep, two concurrency levels, one repetition) - not for comparisons
QUICK = replace(DEFAULT, prompt_lengths=[128, 512], concurrency_levels=[1, 2], repetitions=1, gen_tokens=32,
                llama_bench_reps=1, quick=True)


if __name__ == "__main__":
    print(DEFAULT.to_toml(), end="")
