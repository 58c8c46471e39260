"""Pure model code: GGUF header reader (on GGUFs written by the `gguf` package), catalog, fit estimate."""

from __future__ import annotations

import hashlib
import io
import json
import struct

import pytest

from tests.conftest import run_cli_inprocess as run_cli
from edgekit.errors import UnsuitableDevice, UsageError
from edgekit.models import catalog, fit, steps
from edgekit.models.gguf_header import GGUFError, read_header, read_header_file
from edgekit.models.tiny import _STR, _kv, _s
from edgekit.remote.plan import run_steps
from tests.fixtures import captured


def _write_gguf(path, arch="llama", kv=8, key_length=None):
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_context_length(4096)
    w.add_embedding_length(256)
    w.add_block_count(3)
    w.add_feed_forward_length(512)
    w.add_head_count(8)
    w.add_head_count_kv(kv)
    if key_length:
        w.add_key_length(key_length)
        w.add_value_length(key_length)
    w.add_token_list([f"tok{i}" for i in range(1000)])        # a big array the reader must skip
    w.add_chat_template("{{ messages }}")
    w.add_tensor("token_embd.weight", np.zeros((1000, 256), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_header_fields(tmp_path):
    h = read_header_file(_write_gguf(tmp_path / "m.gguf"))
    assert (h.architecture, h.block_count, h.context_length, h.embedding_length) == ("llama", 3, 4096, 256)
    assert (h.head_count, h.head_count_kv, h.head_dim_k, h.vocab_size) == (8, 8, 32, 1000)
    assert h.chat_template is True and h.header_bytes < (tmp_path / "m.gguf").stat().st_size


def test_gguf_header_gqa_and_key_length(tmp_path):
    h = read_header_file(_write_gguf(tmp_path / "g.gguf", arch="gemma3", kv=2, key_length=64))
    assert (h.architecture, h.head_count_kv, h.head_dim_k, h.head_dim_v) == ("gemma3", 2, 64, 64)
    shape = fit.Shape.from_header(h)
    assert shape.kv_bytes_per_token("f16") == 3 * 2 * (64 + 64) * 2


def test_gguf_header_reads_only_the_header(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf")
    data = path.read_bytes()
    h = read_header(io.BytesIO(data))
    assert read_header(io.BytesIO(data[: h.header_bytes])).block_count == 3   # no tensor bytes needed


@pytest.mark.parametrize("blob, match", [(b"GGML\x03\0\0\0", "not a GGUF"), (b"GGUF\x03\0\0\0\x01", "truncated"),
                                         (b"GGUF\x09\0\0\0" + b"\0" * 16, "unsupported GGUF version")])
def test_gguf_header_rejects_bad_files(blob, match):
    with pytest.raises(GGUFError, match=match):
        read_header(io.BytesIO(blob))


def test_catalog_entries_and_test_section():
    names = [e.name for e in catalog.entries()]
    assert {"chinese-alpaca-2-1.3b", "chinese-alpaca-2-7b-64k", "llama-3-chinese-8b-instruct-v3"} <= set(names)
    assert "gemma3-270m" not in names and "gemma3-270m" in catalog.names(include_test=True)
    l3 = catalog.get("llama-3-chinese-8b-instruct-v3")
    assert l3.chat_template == "llama3" and "<|eot_id|>" in l3.stop and l3.sampling["temperature"] == 0.2
    a2 = catalog.get("chinese-alpaca-2-1.3b")
    assert a2.system_prompt == "You are a helpful assistant. 你是一个乐于助人的助手。" and a2.chat_template == "llama2-sys-bos"
    assert catalog.get("chinese-llama-2-1.3b").chat is False
    for e in catalog.entries(include_test=True):
        for q in e.quants.values():
            assert not q.sha256 or len(q.sha256) == 64
            assert not q.sha256 or q.revision != "main" or e.test, f"{e.name}:{q.name} sha256 needs a pinned revision"


def test_catalog_quant_defaults_by_board_and_urls():
    e, q = catalog.lookup("chinese-alpaca-2-1.3b", total_memory=fit.BOARDS["orin-nano-4gb"]["total_bytes"])
    assert q.name == "q2_k"
    e, q = catalog.lookup("chinese-alpaca-2-1.3b:q8_0")
    assert q.url(e.repo, "https://hf-mirror.com/") == ("https://hf-mirror.com/hfl/chinese-alpaca-2-1.3b-gguf/"
                                                       "resolve/026be4bd42fbf6aeb68b43f4763aee5d27ec9fa7/"
                                                       "ggml-model-q8_0.gguf")


def test_unknown_model_suggests_close_names():
    with pytest.raises(UsageError) as info:
        catalog.get("chinese-alpaca-2-7b")
    assert "chinese-alpaca-2-7b-64k" in info.value.hint
    with pytest.raises(UsageError, match="no quantization"):
        catalog.lookup("chinese-alpaca-2-1.3b:q5_k")


def test_kv_cache_is_half_a_mib_per_token_for_alpaca_7b():
    shape = fit.Shape.from_dict(catalog.get("chinese-alpaca-2-7b-64k").shape)
    assert shape.kv_bytes_per_token("f16") == 512 * 1024
    assert shape.kv_bytes_per_token("q8_0") == 512 * 1024 * 34 / 32 / 2


def test_fit_refuses_with_numbers_and_suggestions():
    e = catalog.get("llama-3-chinese-8b-instruct-v3")
    total = fit.BOARDS["orin-nano-8gb"]["total_bytes"]
    report = fit.check_entry(e, e.quant("q4_k"), 8192, total, "orin-nano-8gb")
    assert not report.fits and report.need_bytes > report.usable_bytes
    assert any("--ctx" in s for s in report.suggestions) and any("q8_0" in s for s in report.suggestions)
    with pytest.raises(UnsuitableDevice) as info:
        fit.require_fit(report)
    assert "GiB" in info.value.message and "--force" in info.value.hint
    fit.require_fit(report, force=True)
    smaller = fit.check_entry(e, e.quant("q4_k"), fit.default_ctx(e, e.quant("q4_k"), total), total)
    assert smaller.fits and 512 <= smaller.ctx < 8192


def test_board_totals_come_from_captured_outputs():
    assert "RAM 6185/7620MB" in captured.TEGRASTATS_ORIN_NANO_JP6_GPU_BUSY
    assert fit.BOARDS["orin-nano-8gb"]["total_bytes"] == 7620 * 2**20
    assert "'tot': 3688892" in captured.JTOP_MEMORY_ORIN_NANO_4GB_JP6
    assert fit.BOARDS["orin-nano-4gb"]["total_bytes"] == 3688892 * 1024


def test_cli_fit_board_exit_codes():
    ok = run_cli("models", "fit", "chinese-alpaca-2-1.3b", "--board", "orin-nano-4gb", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["fits"] is True
    bad = run_cli("models", "fit", "chinese-alpaca-2-7b-64k:q2_k", "--board", "orin-nano-4gb")
    assert bad.returncode == 5 and "short" in bad.stderr
    unknown = run_cli("models", "fit", "alpaca", "--board", "orin-nano-4gb")
    assert unknown.returncode == 2 and "did you mean" in unknown.stderr


@pytest.mark.e2e          # writes a 9 MB GGUF with the sdist's gguf-py (2.5 s): with the end-to-end tests that use it
def test_tiny_llama_synthetic_gguf(tiny_llama_file):
    h = read_header_file(tiny_llama_file)
    assert (h.architecture, h.block_count, h.head_count, h.head_count_kv, h.vocab_size) == ("llama", 2, 4, 2, 32000)
    assert 8_000_000 < tiny_llama_file.stat().st_size < 10_000_000 and h.tensor_count == 2 + 9 * 2


# -- helpers shared with test_gguf_validate.py and test_lockfile.py ---------------------------------------------

def write_gguf_with_template(path):
    """A valid GGUF (gguf package) with a chat template and a llama shape."""
    return _write_gguf(path)


def local_device(tmp_path, monkeypatch, memory: int = 8 * 2**30):
    """This machine as the device: a real `local` transport, the models folder under tmp_path, memory as given."""
    from types import SimpleNamespace

    from edgekit.remote.plan import Context
    from edgekit.remote.target import Target
    from edgekit.remote.transport import Transport

    class LocalDevice(Transport):
        def sudo(self, command, **kwargs):          # the models folder is the test's own: no sudo needed
            return self.run(command, **kwargs)

    models = tmp_path / "device" / "models"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))     # the device helper goes to the device's ~/.cache
    monkeypatch.setattr(steps, "MODELS_DIR", str(models))
    ctx = Context(LocalDevice(Target("local")))
    ctx.run.facts = SimpleNamespace(memory={"total_bytes": memory})
    return ctx, models


# -- a model by URL that is not in the catalog ------------------------------------------------------------------

def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("url, name, expect", [
    ("https://hf.co/acme/x/resolve/main/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf?download=true", None,
     ("Qwen2.5-0.5B-Instruct-Q4_K_M", "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")),
    ("https://example.com/dl/my%20model%20(v2).gguf", None, ("my-model-v2", "my-model-v2.gguf")),
    ("https://example.com/get?id=7", "mine", ("mine", "get.gguf")),
    ("https://example.com/", "mine", ("mine", "mine.gguf")),
    ("https://example.com/m/weights.bin", None, ("weights.bin", "weights.bin.gguf")),
    ("/srv/models/local.gguf", "my-local", ("my-local", "local.gguf")),
])
def test_url_model_names(url, name, expect):
    request = steps.ModelRequest(name, source_url=url, sha256="ab" * 32)
    assert request.by_url and steps.url_names(request) == expect


def test_catalog_name_with_a_url_stays_a_catalog_model():
    request = steps.ModelRequest("chinese-alpaca-2-1.3b:q4_k", source_url="https://mirror.example/x.gguf")
    assert not request.by_url and (request.name, request.quant) == ("chinese-alpaca-2-1.3b", "q4_k")


@pytest.mark.parametrize("url, name, match", [
    ("https://example.com/", None, "cannot name the model"),
    ("https://example.com/m/x.gguf", "bad name!", "not 1-128 letters"),
    ("https://example.com/m/gemma3-270m.gguf", None, "named like the catalog model gemma3-270m"),
])
def test_url_model_names_refused(url, name, match):
    with pytest.raises(UsageError, match=match) as info:
        steps.model_steps(steps.ModelRequest(name, source_url=url, sha256="ab" * 32))
    assert "a name of its own" in info.value.hint


def test_url_model_needs_a_sha256_unless_allow_unpinned():
    url = "https://example.com/m/tiny.gguf"
    with pytest.raises(UsageError, match="no sha256 was given") as info:
        steps.model_steps(steps.ModelRequest(None, source_url=url))
    assert info.value.exit_code == 2 and "--sha256" in info.value.hint and "--allow-unpinned" in info.value.hint
    with pytest.raises(UsageError, match="not 64 hex digits"):
        steps.model_steps(steps.ModelRequest(None, source_url=url, sha256="abc"))
    assert len(steps.model_steps(steps.ModelRequest(None, source_url=url, allow_unpinned=True))) == 2
    assert len(steps.model_steps(steps.ModelRequest(None, source_url=url, sha256="AB" * 32))) == 2


def test_url_entry_takes_shape_and_template_from_the_header(tmp_path):
    h = read_header_file(_write_gguf(tmp_path / "m.gguf"))
    request = steps.ModelRequest(None, source_url=str(tmp_path / "m.gguf"), sha256="ab" * 32)
    entry, quant = steps.url_entry(request, h, 123)
    assert entry.name == "m" and quant.file == "m.gguf" and quant.size == 123 and quant.sha256 == "ab" * 32
    assert entry.shape == {"architecture": "llama", "block_count": 3, "embedding_length": 256, "head_count": 8,
                           "head_count_kv": 8, "vocab_size": 1000, "context_length": 4096, "feed_forward_length": 512}
    assert entry.chat is True and entry.chat_template == ""     # llama-server uses the GGUF's own template
    assert (entry.native_ctx, entry.recommended_ctx) == (4096, 4096)


def test_url_model_installs_with_its_own_name_shape_and_template(tmp_path, monkeypatch):
    ctx, models = local_device(tmp_path, monkeypatch)
    src = _write_gguf(tmp_path / "Acme-Chat-Q8_0.gguf")
    request = steps.ModelRequest(None, source_url=str(src), sha256=_sha(src), fetch_on="controller")
    results = run_steps(ctx, steps.model_steps(request))
    assert [r.status for r in results] == ["ok", "changed"]
    assert results[0].message.startswith("fits: Acme-Chat-Q8_0:gguf ctx 4096")      # read from the local file
    model = ctx.run.model
    assert model.name == "Acme-Chat-Q8_0" and model.sha256 == _sha(src) and model.n_ctx == 4096
    assert model.path == f"{models}/Acme-Chat-Q8_0/Acme-Chat-Q8_0.gguf"
    assert model.entry["chat"] is True and model.entry["chat_template"] == ""
    assert model.entry["shape"]["block_count"] == 3
    assert (models / "Acme-Chat-Q8_0" / "Acme-Chat-Q8_0.gguf").read_bytes() == src.read_bytes()


def test_url_model_fit_is_read_from_the_fetched_header(tmp_path, monkeypatch, model_server):
    """Fetched on the device: the fit is not known before the download; it is checked before anything uses it."""
    ctx, models = local_device(tmp_path, monkeypatch, memory=700 * 2**20)   # 512 MiB reserve + 400 MiB runtime
    src = _write_gguf(tmp_path / "big-ctx.gguf")
    served = model_server.add("acme/big", "big-ctx.gguf", src)
    request = steps.ModelRequest(None, source_url=model_server.endpoint() + served.url_path, sha256=served.sha256,
                                 fetch_on="device", lock_file=str(tmp_path / "edgekit.lock"))
    with pytest.raises(UnsuitableDevice, match="short") as info:
        run_steps(ctx, steps.model_steps(request))
    assert info.value.exit_code == 5 and "--force" in info.value.hint
    assert list((models / "big-ctx").iterdir()) == []                      # removed again: the device as it was
    forced = steps.ModelRequest(None, source_url=request.source_url, sha256=served.sha256, fetch_on="device",
                                force=True, lock_file=request.lock_file)
    results = run_steps(ctx, steps.model_steps(forced))
    assert [r.status for r in results] == ["ok", "changed"] and ctx.run.model.entry["shape"]
    again = run_steps(ctx, steps.model_steps(forced))                      # now the header is read on the device
    assert again[0].message.startswith("does NOT fit (--force): big-ctx:gguf")


def test_url_model_without_a_shape_needs_force(tmp_path, monkeypatch):
    ctx, _ = local_device(tmp_path, monkeypatch)
    blob = (b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + _kv("general.architecture", _STR, "mystery")
            + _s("t") + struct.pack("<IqIQ", 1, 64, 0, 0))
    blob += b"\0" * ((-len(blob)) % 32) + b"\0" * 256
    src = tmp_path / "mystery.gguf"
    src.write_bytes(blob)
    request = steps.ModelRequest(None, source_url=str(src), sha256=_sha(src), fetch_on="controller")
    with pytest.raises(UsageError, match="cannot estimate whether mystery fits") as info:
        run_steps(ctx, steps.model_steps(request))
    assert "--force" in info.value.hint
    forced = steps.ModelRequest(None, source_url=str(src), sha256=_sha(src), fetch_on="controller", force=True)
    assert [r.status for r in run_steps(ctx, steps.model_steps(forced))] == ["ok", "changed"]


def test_a_model_reference_is_split_in_one_place():
    assert catalog.split_ref("gemma3-270m:q4_k_m") == ("gemma3-270m", "q4_k_m")
    assert catalog.split_ref("gemma3-270m") == ("gemma3-270m", None)
    assert catalog.split_ref("gemma3-270m:") == ("gemma3-270m", None)
