"""Speculative decoding on a stand-in, for real: SmolLM2-135M-Instruct Q4_1 (from PyPI) drafts for the same model
re-expanded to F16 (2.7x its bytes), one vocabulary. With greedy sampling the text is the same with and without
the draft, on several prompts; the server reports the drafted and accepted tokens (issue 22).

The F16 target: edgekit's build installs llama-server, llama-bench and llama-cli, not llama-quantize, so the Q4_1
file is re-expanded with gguf-py's `dequantize` (ggml's dequantization in numpy) and written with the gguf
package: every key/value (the tokenizer too) copied, each Q4_1/Q8_0 tensor stored as F16."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TEST_CACHE
from tests.served import cli_in
from tests.test_demo_e2e import smollm2_gguf  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

SMOL_REPO, SMOL_FILE = "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["Write a haiku about the sea.", "List three prime numbers and explain why they are prime.",
           "Summarise: The quick brown fox jumps over the lazy dog. The dog does not move.",
           "def add(a, b):\n    return a + b\n\nRewrite this Python function with type hints."]


def expand_to_f16(source: Path, dest: Path) -> Path:
    """The same model with every quantized tensor dequantized and stored as F16 (gguf-py), key/values copied."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    part = dest.with_suffix(".part")
    writer = gguf.GGUFWriter(str(part), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if key == "general.file_type":
            value = int(gguf.LlamaFileType.MOSTLY_F16)
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub)
    for t in reader.tensors:
        data = t.data
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float16)
        writer.add_tensor(t.name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    part.replace(dest)
    return dest


@pytest.fixture(scope="module")
def smollm2_f16(smollm2_gguf) -> Path:  # noqa: F811
    out = TEST_CACHE / "SmolLM2-135M-Instruct.F16.gguf"
    if not out.is_file():
        expand_to_f16(smollm2_gguf, out)
    return out


@pytest.fixture(scope="module")
def spec(standin_factory, model_server, smollm2_gguf, smollm2_f16, llama_src, tmp_path_factory,  # noqa: F811
         session_dir):
    sb = standin_factory("t-spec")
    model_server.add(SMOL_REPO, SMOL_FILE, smollm2_gguf)
    home = tmp_path_factory.mktemp("spec-home")
    cli = cli_in(home, session_dir)
    sha = hashlib.sha256(smollm2_f16.read_bytes()).hexdigest()
    base = ["provision", sb.name, "-m", "smollm2-f16", "--model-url", str(smollm2_f16), "--sha256", sha,
            "--llama-src", str(llama_src), "--cpu", "--hf-endpoint", model_server.endpoint(sb.host_address),
            "--fetch-on", "device", "--allow-unpinned", "--threads", "1", "--parallel", "1", "--ctx", "1024",
            "--no-metrics", "--json"]
    return {"sb": sb, "cli": cli, "base": base, "home": home}


def _complete(spec, prompt: str) -> dict:
    state = json.loads((spec["home"] / "targets" / f"{spec['sb'].name}.json").read_text())
    key = Path(state["api_key_file"]).read_text().strip()
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 48, "temperature": 0, "seed": 42,
            "top_k": 1}
    req = urllib.request.Request(state["url"] + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


def test_greedy_text_is_the_same_with_and_without_the_draft(spec):
    plain = spec["cli"](*spec["base"])
    assert plain.returncode == 0, plain.stderr[-4000:]
    without = [_complete(spec, p) for p in PROMPTS]
    assert all("draft_n" not in (a.get("timings") or {}) or not a["timings"]["draft_n"] for a in without)

    paired = spec["cli"](*spec["base"], "--draft", "smollm2-135m-instruct")
    assert paired.returncode == 0, paired.stderr[-4000:]
    steps = {s["step"]: s for s in json.loads(paired.stdout)["steps"]}
    assert steps["draft pair: smollm2-135m-instruct for smollm2-f16"]["message"].startswith(
        "smollm2-135m-instruct drafts for smollm2-f16: same tokenizer (49152 tokens")
    assert "+ draft smollm2-135m-instruct:q4_1" in steps["model fits: smollm2-f16"]["message"]
    with_draft = [_complete(spec, p) for p in PROMPTS]
    print("\n".join(f"{p!r} -> {b['choices'][0]['message']['content']!r} {b['timings']}"
                    for p, b in zip(PROMPTS, with_draft)))
    for prompt, a, b in zip(PROMPTS, without, with_draft):
        assert b["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"], prompt
    drafted = sum(b["timings"].get("draft_n", 0) for b in with_draft)
    accepted = sum(b["timings"].get("draft_n_accepted", 0) for b in with_draft)
    assert drafted > 0 and 0 < accepted <= drafted, [b["timings"] for b in with_draft]
    print(f"draft acceptance over {len(PROMPTS)} prompts: {accepted}/{drafted} = {accepted / drafted:.2f}")


def test_a_lora_adapter_is_served_and_its_scale_changes_greedy_output(spec, tmp_path):
    """A tiny real adapter for SmolLM2 (gguf package) served with it: scale 0 and scale 1 per request differ;
    status lists it. (The adapter for the wrong base is refused before connecting: test_lora.)"""
    from tests.test_lora import write_adapter

    adapter = write_adapter(tmp_path / "smol-lora.gguf", strength=1.0)
    base = [a for a in spec["base"] if a not in ("--json",)]
    i = base.index("-m")
    args = [*base[:i], "-m", "smollm2-135m-instruct", *base[i + 6:], "--lora", f"{adapter}:1", "--json"]
    res = spec["cli"](*args)
    assert res.returncode == 0, res.stderr[-4000:]
    steps = {s["step"]: s for s in json.loads(res.stdout)["steps"]}
    assert steps["lora adapter: smol-lora.gguf"]["status"] == "changed"
    state = json.loads((spec["home"] / "targets" / f"{spec['sb'].name}.json").read_text())
    key = Path(state["api_key_file"]).read_text().strip()

    def ask(scale: float) -> str:
        body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 24, "temperature": 0,
                "seed": 42, "lora": [{"id": 0, "scale": scale}]}
        req = urllib.request.Request(state["url"] + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read())["choices"][0]["message"]["content"]

    off, on = ask(0.0), ask(1.0)
    print(f"lora scale 0: {off!r}\nlora scale 1: {on!r}")
    assert off != on and off == ask(0.0)
    status = spec["cli"]("status", spec["sb"].name, "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout)["lora"][0].endswith("-smol-lora.gguf:1")
