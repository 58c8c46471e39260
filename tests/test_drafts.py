"""Speculative-decoding drafts: tokenizer fingerprints from real GGUF headers, pairs refused naming what differs
before anything is installed, the fit counting the draft, the env file wiring it (issue 22)."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.models import catalog
from edgekit.models.drafts import DraftMismatch, Tokenizer, check_pair
from edgekit.models.gguf_header import check_file, read_header_file
from edgekit.service.settings import parse_env, render_env, service_variables
from tests.conftest import run_cli_inprocess as run_cli
from tests.test_demo_e2e import smollm2_gguf  # noqa: F401  (the session fixture: SmolLM2-135M-Instruct Q4_1)

def tokenizer_of(path) -> Tokenizer:
    return Tokenizer.from_json(check_file(path).tokenizer)


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _tokenizer_fields(path) -> dict:
    """key -> (value type, item type or None, value) of the tokenizer.ggml.* keys of a GGUF v3 header (a plain
    reader for building fixtures; gguf.GGUFReader takes 7 s on this file)."""
    def unpack(fmt):
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, fh.read(n))[0]

    def value(vtype):
        if vtype == 8:
            return fh.read(unpack("<Q"))
        if vtype == 9:
            itype, count = unpack("<I"), unpack("<Q")
            return itype, [value(itype) for _ in range(count)]
        return unpack(_SCALARS[vtype])

    out = {}
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF" and unpack("<I") == 3
        unpack("<Q")
        for _ in range(unpack("<Q")):
            key = fh.read(unpack("<Q")).decode()
            vtype = unpack("<I")
            got = value(vtype)
            if key.startswith("tokenizer.ggml."):
                out[key] = (vtype, *(got if vtype == 9 else (None, got)))
    return out


def copy_tokenizer(source, dest, change_token: int | None = None):
    """A tiny real GGUF (one tensor) carrying `source`'s tokenizer, written with the gguf package: another file of
    the same vocabulary, as a re-quantized model is. With change_token, that token's text differs."""
    writer = gguf.GGUFWriter(str(dest), "llama")
    for key, (vtype, itype, val) in _tokenizer_fields(source).items():
        if vtype == 9:
            if key == "tokenizer.ggml.tokens" and change_token is not None:
                val = [*val[:change_token], b"<changed>", *val[change_token + 1:]]
            writer.add_array(key, val)
        elif vtype == 8:
            writer.add_string(key, val.decode())
        else:
            writer.add_key_value(key, val, gguf.GGUFValueType(vtype))
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def test_catalog_fingerprints_are_the_files_own(smollm2_gguf, gemma_gguf):  # noqa: F811
    for name, path in (("smollm2-135m-instruct", smollm2_gguf), ("gemma3-270m", gemma_gguf)):
        from_file = check_file(path).tokenizer
        assert Tokenizer.from_json(catalog.get(name).tokenizer) == Tokenizer.from_json(from_file)
        assert from_file["vocab_size"] == catalog.get(name).shape["vocab_size"]
        assert read_header_file(path, tokenizer=True).tokenizer == from_file       # streaming read agrees


def test_gemma3_as_a_draft_for_smollm2_is_refused_naming_what_differs(smollm2_gguf, gemma_gguf):  # noqa: F811
    with pytest.raises(DraftMismatch) as e:
        check_pair("smollm2-135m-instruct", tokenizer_of(smollm2_gguf), 49152,
                   "gemma3-270m", tokenizer_of(gemma_gguf), 262144)
    message = e.value.message
    assert message.startswith("gemma3-270m cannot draft for smollm2-135m-instruct: their tokenizers differ")
    assert "vocabulary size 49152 vs 262144" in message
    assert "token list sha256 e3f79317b457 vs 1d661caba46c" in message
    assert "tokenizer.ggml.model gpt2 vs llama" in message
    assert e.value.exit_code == 2 and "--spec-type ngram-mod" in e.value.hint


def test_same_vocabulary_accepted_one_changed_token_refused(smollm2_gguf, tmp_path):  # noqa: F811
    target = tokenizer_of(smollm2_gguf)
    same = tokenizer_of(copy_tokenizer(smollm2_gguf, tmp_path / "same.gguf"))
    assert same == target
    assert check_pair("t", target, 49152, "d", same, 49152).startswith("same tokenizer (49152 tokens")
    changed = tokenizer_of(copy_tokenizer(smollm2_gguf, tmp_path / "changed.gguf", change_token=1000))
    assert changed.vocab_size == target.vocab_size
    with pytest.raises(DraftMismatch, match=r"their tokenizers differ \(token list sha256 e3f79317b457 vs "):
        check_pair("t", target, 49152, "d", changed, 49152)


def test_provision_refuses_the_pair_before_connecting():
    # 192.0.2.1 (TEST-NET-1) is never reached: the refusal comes from the catalog's fingerprints first
    res = run_cli("provision", "jetson@192.0.2.1", "-m", "smollm2-135m-instruct", "--draft", "gemma3-270m",
                  "--allow-unpinned", "--dry-run")
    assert res.returncode == 2
    assert "error: gemma3-270m cannot draft for smollm2-135m-instruct: their tokenizers differ (vocabulary size " \
           "49152 vs 262144" in res.stderr
    assert "192.0.2.1" not in res.stderr
    other = run_cli("provision", "jetson@192.0.2.1", "-m", "chinese-alpaca-2-7b-64k", "--draft",
                    "llama-3-chinese-8b-instruct-v3", "--allow-unpinned", "--dry-run")
    assert other.returncode == 2 and "vocabulary size 55296 vs 128256" in other.stderr


def test_catalog_drafts_share_their_targets_vocabulary():
    pairs = [(e, catalog.get(d)) for e in catalog.entries() for d in e.drafts]
    assert ("chinese-alpaca-2-7b-64k", "chinese-alpaca-2-1.3b") in [(t.name, d.name) for t, d in pairs]
    for target, draft in pairs:
        assert target.shape["vocab_size"] == draft.shape["vocab_size"]
    with pytest.raises(catalog.CatalogError, match="draft 'nope' is not another catalog model"):
        catalog.parse(_one_entry('drafts = ["nope"]'))


def _one_entry(extra: str) -> str:
    return f"""[models.m]
repo = "o/m"
family = "llama2"
native_ctx = 4096
recommended_ctx = 4096
default_quant = "q4_k"
{extra}
[models.m.quants.q4_k]
file = "m.gguf"
pinned = false
unpinned_reason = "test"
"""


def test_env_file_wires_the_draft_or_the_ngram_speculation():
    base = dict(model_name="m", model_path="/opt/edgekit/models/m/m.gguf", ctx=2048, port=8080, host="0.0.0.0",
                gpu=True, api_key=True, parallel=1, threads=None, chat_template=None, cache_type_kv=None, groups=[])
    env = parse_env(render_env(service_variables(**base, draft="/opt/edgekit/models/d/d.gguf")))
    assert env["LLAMA_ARG_SPEC_DRAFT_MODEL"] == "/opt/edgekit/models/d/d.gguf"
    # b11312 infers a speculative type only for MTP/DFlash drafts: a plain model needs draft-simple named
    assert env["LLAMA_ARG_N_GPU_LAYERS_DRAFT"] == "999" and env["LLAMA_ARG_SPEC_TYPE"] == "draft-simple"
    ngram = parse_env(render_env(service_variables(**base, spec_type="ngram-mod")))
    assert ngram["LLAMA_ARG_SPEC_TYPE"] == "ngram-mod" and "LLAMA_ARG_SPEC_DRAFT_MODEL" not in ngram


def test_provision_options_carry_the_draft_as_its_own_request():
    from edgekit.provision import options
    from edgekit.settings import resolve

    opts = options(resolve({"model": "chinese-alpaca-2-7b-64k:q2_k", "draft": "chinese-alpaca-2-1.3b:q2_k"}))
    assert opts.model.draft == "chinese-alpaca-2-1.3b:q2_k"
    assert (opts.draft.name, opts.draft.quant, opts.draft.draft_of) == ("chinese-alpaca-2-1.3b", "q2_k",
                                                                        "chinese-alpaca-2-7b-64k")
    assert opts.models[-1] is opts.draft and opts.draft.draft is None
    ngram = options(resolve({"model": "chinese-alpaca-2-1.3b:q2_k", "spec_type": "ngram-mod"}))
    assert ngram.draft is None and ngram.service.spec_type == "ngram-mod"


def test_sweep_spec_values_apply_over_the_services_own_env():
    from edgekit.bench import sweep

    assert sweep.parse_sweep("spec=off,draft,ngram").values == ("off", "draft", "ngram")
    with pytest.raises(UsageError, match="--sweep spec: 'eagle' is not one of off, draft, ngram, ngram-simple"):
        sweep.parse_sweep("spec=off,eagle")
    own = parse_env(render_env(service_variables(
        model_name="m", model_path="/opt/edgekit/models/m/m.gguf", ctx=1024, port=8080, host="0.0.0.0", gpu=False,
        api_key=True, parallel=1, threads=None, chat_template=None, cache_type_kv=None, groups=[],
        draft="/opt/edgekit/models/d/d.gguf")))
    off, draft, ngram = (sweep.spec_point(v, own) for v in ("off", "draft", "ngram"))
    assert off.env == {"LLAMA_ARG_SPEC_DRAFT_MODEL": "", "LLAMA_ARG_SPEC_TYPE": "none"}
    assert draft.env == {"LLAMA_ARG_SPEC_DRAFT_MODEL": "/opt/edgekit/models/d/d.gguf",
                         "LLAMA_ARG_SPEC_TYPE": "draft-simple"} and not draft.skipped
    assert ngram.env == {"LLAMA_ARG_SPEC_DRAFT_MODEL": "", "LLAMA_ARG_SPEC_TYPE": "ngram-mod"}
    no_draft = sweep.spec_point("draft", {k: v for k, v in own.items() if k != "LLAMA_ARG_SPEC_DRAFT_MODEL"})
    assert no_draft.skipped.startswith("no draft model: provision with --draft NAME")


def test_acceptance_sums_the_servers_draft_counters():
    from edgekit.bench.report import acceptance

    assert acceptance([{"draft_n": 10, "draft_n_accepted": 7}, {"draft_n": 6, "draft_n_accepted": 1},
                       {"draft_n": None}]) == {"draft_tokens": 16, "draft_accepted": 8, "acceptance": 0.5}
    assert acceptance([{}])["acceptance"] is None


def test_the_exporter_passes_the_servers_draft_counters_on_per_model():
    """b11312's /metrics prints the speculative counters (tools/server/server-task.cpp); the exporter re-exports
    them with the model label like every llama-server family."""
    from edgekit.exporter import llama
    from edgekit.exporter.textformat import Exposition

    metrics = "".join(f"# HELP llamacpp:{n} {h}\n# TYPE llamacpp:{n} counter\nllamacpp:{n} {v}\n" for n, h, v in (
        ("spec_decode_num_draft_tokens_total", "Speculative: Total draft tokens generated", 132),
        ("spec_decode_num_accepted_tokens_total", "Speculative: Total draft tokens accepted by the target model", 117),
        ("spec_decode_num_drafts_total", "Speculative: Total speculative decoding verification steps", 40)))
    answers = {"/health": (200, '{"status":"ok"}'), "/models": (200, '{"data":[{"id":"smollm2-f16"}]}'),
               "/metrics": (200, metrics)}
    exp = Exposition()
    llama.add_server(exp, "http://127.0.0.1:8080", "k", "smollm2-f16",
                     fetch=lambda url, key, timeout: answers[url.split("8080", 1)[1]])
    text = exp.render()
    assert 'llamacpp:spec_decode_num_draft_tokens_total{model="smollm2-f16"} 132' in text
    assert 'llamacpp:spec_decode_num_accepted_tokens_total{model="smollm2-f16"} 117' in text
