"""LoRA adapters: a tiny real adapter for SmolLM2-135M written with the gguf package, checked against its base
(architecture, every pair's in/out features) before anything is installed; the wrong base refused (issue 22)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from edgekit.models import catalog, fit, lora
from edgekit.service.settings import parse_env, render_env, service_variables
from tests.conftest import run_cli_inprocess as run_cli

SMOL = fit.Shape.from_dict(catalog.get("smollm2-135m-instruct").shape)
GEMMA = fit.Shape.from_dict(catalog.get("gemma3-270m").shape)


def write_adapter(path, shape: fit.Shape = SMOL, rank: int = 4, seed: int = 0, strength: float = 0.5,
                  weights=("attn_q", "attn_v", "ffn_down"), out_of: dict | None = None):
    """A real LoRA GGUF for `shape` (as llama.cpp's convert_lora_to_gguf.py writes them: general.type adapter,
    adapter.type lora, alpha, F32 <weight>.lora_a [in, rank] and .lora_b [rank, out]), random but strong enough to
    change greedy output. `out_of` overrides a weight's out features (a wrong adapter)."""
    e, ff = shape.embedding_length, shape.feed_forward_length
    dims = {"attn_q": (e, shape.head_count * shape.k_dim), "attn_v": (e, shape.head_count_kv * shape.v_dim),
            "ffn_down": (ff, e), **(out_of or {})}
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), shape.architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for block in range(shape.block_count):
        for weight in weights:
            n_in, n_out = dims[weight]
            writer.add_tensor(f"blk.{block}.{weight}.weight.lora_a",
                              rng.normal(0, 1 / np.sqrt(n_in), (rank, n_in)).astype(np.float32))
            writer.add_tensor(f"blk.{block}.{weight}.weight.lora_b",
                              rng.normal(0, strength, (n_out, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def smol_adapter(tmp_path_factory):
    return write_adapter(tmp_path_factory.mktemp("lora") / "smol-lora.gguf")


def test_an_adapter_for_smollm2_fits_it_and_is_pinned_by_its_bytes(smol_adapter):
    adapter = lora.read_adapter(f"{smol_adapter}:0.5")
    assert (adapter.architecture, adapter.scale, adapter.name) == ("llama", 0.5, "smol-lora.gguf")
    assert dict(adapter.tensors)["blk.0.attn_q.weight.lora_a"] == (576, 4)
    assert dict(adapter.tensors)["blk.29.ffn_down.weight.lora_b"] == (4, 576)
    assert lora.check_base(adapter, SMOL, "smollm2-135m-instruct") == (
        "smol-lora.gguf fits smollm2-135m-instruct (llama, 90 adapted weights), scale 0.5")
    assert adapter.device_path == f"/opt/edgekit/loras/{adapter.sha256[:12]}-smol-lora.gguf"
    assert lora.read_adapter(str(smol_adapter)).scale == 1.0


def test_the_wrong_base_is_refused_naming_what_differs(smol_adapter, tmp_path):
    adapter = lora.read_adapter(str(smol_adapter))
    with pytest.raises(lora.AdapterMismatch) as e:
        lora.check_base(adapter, GEMMA, "gemma3-270m")
    assert e.value.message.startswith("smol-lora.gguf is not an adapter for gemma3-270m: architecture llama vs the "
                                      "base's gemma3; blk.0.attn_q.weight.lora_a: in features 576, the base's attn_q "
                                      "has 640")
    assert e.value.exit_code == 2
    wide = lora.read_adapter(str(write_adapter(tmp_path / "wide.gguf", out_of={"attn_v": (576, 256)})))
    assert lora.mismatches(wide, SMOL)[0] == "blk.0.attn_v.weight.lora_b: out features 256, the base's attn_v has 192"


def test_provision_refuses_the_wrong_base_before_connecting(smol_adapter):
    res = run_cli("provision", "jetson@192.0.2.1", "-m", "gemma3-270m", "--lora", f"{smol_adapter}:1",
                  "--allow-unpinned", "--dry-run")
    assert res.returncode == 2
    assert "error: smol-lora.gguf is not an adapter for gemma3-270m: architecture llama vs the base's gemma3" \
        in res.stderr
    assert "hint: use an adapter trained on gemma3-270m" in res.stderr


def test_not_an_adapter_and_a_url_are_refused(tmp_path):
    model = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(model), "llama")
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(lora.UsageError, match=r"is not a LoRA adapter: tensor 'blk.0.attn_q.weight'"):
        lora.read_adapter(str(model))
    with pytest.raises(lora.UsageError, match="only a file on this machine"):
        lora.parse("https://example.org/a.gguf:1")
    assert lora.parse("/x/a.gguf:0") == ("/x/a.gguf", 0.0) and lora.parse("/x/a:b.gguf") == ("/x/a:b.gguf", 1.0)


def test_env_file_passes_the_adapter_and_status_reads_it_back():
    from edgekit.provision import served_loras

    env = parse_env(render_env(service_variables(
        model_name="m", model_path="/opt/edgekit/models/m/m.gguf", ctx=1024, port=8080, host="0.0.0.0", gpu=False,
        api_key=True, parallel=1, threads=None, chat_template=None, cache_type_kv=None, groups=[],
        sleep_idle_seconds=300, lora="/opt/edgekit/loras/abc-a.gguf:0.5")))
    assert env["EDGEKIT_SERVER_ARGS"] == "--sleep-idle-seconds 300 --lora-scaled /opt/edgekit/loras/abc-a.gguf:0.5"
    assert served_loras(env) == ["/opt/edgekit/loras/abc-a.gguf:0.5"]
