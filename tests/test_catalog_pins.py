"""Catalog pins (issue 12): every quant is pinned (40-hex revision + 64-hex sha256) or says why not; the loader
refuses anything else; `models show --json` prints the pin of every quant; `require_pinned` guards installs."""

from __future__ import annotations

import json
import re

import pytest

from edgekit.errors import USAGE, UsageError
from edgekit.models import catalog
from edgekit.models.catalog import CatalogError, parse, require_pinned
from tests.conftest import run_cli_inprocess as run_cli

REV = re.compile(r"[0-9a-f]{40}")
SHA = re.compile(r"[0-9a-f]{64}")
ALL_MODELS = catalog.names(include_test=True)


def _check_pin(where: str, q: dict, repo: str) -> None:
    """One quant as `show --json` prints it: pinned with well-formed hashes and a source page, or marked unpinned."""
    assert isinstance(q["pinned"], bool), where
    if q["pinned"]:
        assert REV.fullmatch(q["revision"]) and SHA.fullmatch(q["sha256"]), where
        assert q["unpinned_reason"] == "", where
        assert q["source"].startswith(f"https://huggingface.co/{repo}/blob/"), f"{where}: source is not a blob page"
    else:
        assert not (REV.fullmatch(q["revision"]) and SHA.fullmatch(q["sha256"])), f"{where}: pinned but says not"
        assert q["unpinned_reason"].strip(), f"{where}: unpinned without a reason"
        assert q["sha256"] == "" or SHA.fullmatch(q["sha256"]), where


@pytest.mark.parametrize("name", ALL_MODELS)
def test_show_json_prints_revision_sha256_and_pin_of_every_quant(name):
    res = run_cli("models", "show", name, "--json")
    assert res.returncode == 0, res.stderr
    entry = json.loads(res.stdout)
    assert entry["quants"], name
    for qname, q in entry["quants"].items():
        assert {"revision", "sha256", "pinned", "unpinned_reason", "source"} <= set(q)
        _check_pin(f"{name}:{qname}", q, entry["repo"])


def test_the_whole_catalog_is_pinned_or_marked_and_defaults_exist():
    for e in catalog.entries(include_test=True):
        assert e.default_quant in e.quants and e.small_board_quant in e.quants, e.name
        for q in e.quants.values():
            _check_pin(f"{e.name}:{q.name}", q.to_json(), e.repo)


def test_catalog_pins_found_for_issue_12():
    """The quants pinned from the Hub's blob pages; the rest stay explicitly unpinned."""
    pinned = {f"{e.name}:{q.name}" for e in catalog.entries(include_test=True) for q in e.quants.values() if q.pinned}
    assert {"llama-3-chinese-8b-instruct-v3:q2_k", "llama-3-chinese-8b-instruct-v3:q6_k",
            "llama-3-chinese-8b-instruct-v3:q8_0", "chinese-llama-2-7b:q4_k"} <= pinned
    unpinned = {f"{e.name}:{q.name}" for e in catalog.entries(include_test=True) for q in e.quants.values()
                if not q.pinned}
    assert unpinned == {"chinese-alpaca-2-7b-64k:q4_k", "chinese-alpaca-2-7b-64k:q6_k", "chinese-alpaca-2-7b-64k:q8_0",
                        "gemma3-270m:q4_k_m", "tiny-llama:f32", "smollm2-135m-instruct:q4_1"}
    e, q = catalog.lookup("llama-3-chinese-8b-instruct-v3:q6_k")
    assert q.url(e.repo) == ("https://huggingface.co/hfl/llama-3-chinese-8b-instruct-v3-gguf/resolve/"
                             "84409f8d31cf1da499f052981c686790ec0d961b/ggml-model-q6_k.gguf")


def test_show_text_marks_unpinned_quants():
    res = run_cli("models", "show", "chinese-alpaca-2-7b-64k")
    assert res.returncode == 0 and "NOT PINNED" in res.stderr and "pinned" in res.stderr


# ---- the loader ---------------------------------------------------------------------------------------------

MODEL = """
[models.m]
repo = "o/m-gguf"
family = "llama2"
native_ctx = 4096
recommended_ctx = 4096
default_quant = "{default}"
small_board_quant = "q2_k"
"""
PINNED_Q2 = """
[models.m.quants.q2_k]
file = "m-q2_k.gguf"
sha256 = "{sha}"
revision = "{rev}"
source = "https://huggingface.co/o/m-gguf/blob/{rev}/m-q2_k.gguf"
"""
SHA_OK, REV_OK = "ab" * 32, "c0ffee" * 6 + "abcd"


def _toml(quant: str = "", default: str = "q2_k", sha: str = SHA_OK, rev: str = REV_OK) -> str:
    return MODEL.format(default=default) + PINNED_Q2.format(sha=sha, rev=rev) + quant


def test_parse_accepts_pinned_and_explicitly_unpinned_quants():
    unpinned = ('\n[models.m.quants.q4_k]\nfile = "m-q4_k.gguf"\nrevision = "main"\npinned = false\n'
                'unpinned_reason = "no public hash"\n')
    entry = parse(_toml(unpinned))["m"]
    assert entry.quants["q2_k"].pinned is True and entry.quants["q4_k"].pinned is False
    assert entry.quants["q4_k"].unpinned_reason == "no public hash"
    assert entry.to_json()["quants"]["q4_k"]["pinned"] is False


@pytest.mark.parametrize("text, match", [
    (_toml(rev="main"), "not pinned .* and not marked so"),                                  # 'main' left unmarked
    (_toml(sha=""), "not pinned .* and not marked so"),                                       # no sha256, unmarked
    (_toml(rev="c0ffee"), "not pinned"),                                                      # short commit id
    (_toml(sha="ab" * 31), "sha256 .* is not 64 lowercase hex digits"),                      # 62 hex digits
    (_toml(sha="AB" * 32), "sha256 .* is not 64 lowercase hex digits"),
    (_toml(sha="zz" * 32), "sha256 .* is not 64 lowercase hex digits"),
    (_toml('\n[models.m.quants.q4_k]\nfile = "x.gguf"\npinned = false\n'), "not marked so"),  # no reason
    (_toml('\n[models.m.quants.q4_k]\nfile = "x.gguf"\nrevision = "main"\nunpinned_reason = "x"\n'),
     "not marked so"),                                                                        # reason, no marker
    (_toml().replace('source =', 'pinned = false\nunpinned_reason = "x"\nsource ='), "marked unpinned"),
    (_toml().replace('source =', 'sha = "x"\nsource ='), "unknown key"),
    (_toml(default="q4_k"), "default_quant 'q4_k' is not one of its quants"),
    (_toml().replace('file = "m-q2_k.gguf"\n', ""), "no file"),
    (_toml().replace('family = "llama2"\n', ""), "KeyError"),
    ("[models.m\n", "models.toml"),
])
def test_parse_refuses_a_quant_that_is_neither_pinned_nor_marked(text, match):
    with pytest.raises(CatalogError, match=match):
        parse(text)


# ---- the install guard ----------------------------------------------------------------------------------------

def test_require_pinned_returns_a_pinned_quant():
    q = require_pinned("chinese-alpaca-2-1.3b", "q4_k")
    assert q.name == "q4_k" and q.pinned
    assert require_pinned("llama-3-chinese-8b-instruct-v3:q8_0").sha256.startswith("d22bd641")


def test_require_pinned_refuses_unpinned_with_one_message_and_the_opt_in_flag():
    with pytest.raises(UsageError) as info:
        require_pinned("chinese-alpaca-2-7b-64k", "q6_k")
    err = info.value
    assert err.exit_code == USAGE == 2
    assert "chinese-alpaca-2-7b-64k:q6_k is not pinned" in err.message and "no public page" in err.message
    assert "--allow-unpinned" in err.hint and "chinese-alpaca-2-7b-64k:q2_k" in err.hint
    assert "X-Linked-Etag" in err.hint


def test_require_pinned_opt_in_and_explicit_sha256():
    assert require_pinned("chinese-alpaca-2-7b-64k:q6_k", allow_unpinned=True).name == "q6_k"
    assert require_pinned("chinese-alpaca-2-7b-64k:q6_k", sha256="AB" * 32).name == "q6_k"   # --sha256 pins bytes
    with pytest.raises(UsageError, match="not 64 hex digits"):
        require_pinned("chinese-alpaca-2-7b-64k:q6_k", sha256="abc")


def test_require_pinned_default_quant_depends_on_the_board():
    """Board unknown (before connecting): every quant it could pick must be pinned; known: only the one it picks."""
    with pytest.raises(UsageError, match="chinese-alpaca-2-7b-64k:q4_k is not pinned"):
        require_pinned("chinese-alpaca-2-7b-64k")                                    # default q4_k is unpinned
    small = require_pinned("chinese-alpaca-2-7b-64k", total_memory=3688892 * 1024)   # 4 GB board -> q2_k
    assert small.name == "q2_k" and small.pinned
    with pytest.raises(UsageError, match="q4_k is not pinned"):
        require_pinned("chinese-alpaca-2-7b-64k", total_memory=8 * 2**30)


def test_require_pinned_checks_the_small_board_quant_before_the_board_is_known(monkeypatch):
    pinned_q4 = ('\n[models.m.quants.q4_k]\nfile = "m-q4_k.gguf"\nsha256 = "' + SHA_OK + '"\nrevision = "' + REV_OK
                   + '"\nsource = "s"\n')
    text = _toml(default="q4_k", rev="main").replace(
        'source = "https://huggingface.co/o/m-gguf/blob/main/m-q2_k.gguf"',
        'pinned = false\nunpinned_reason = "small one unknown"\nsource = ""') + pinned_q4
    monkeypatch.setattr(catalog, "_load", lambda: parse(text))
    with pytest.raises(UsageError, match="m:q2_k is not pinned .*: small one unknown"):
        require_pinned("m")                                       # default q4_k is pinned, the small-board one not
    assert require_pinned("m", total_memory=8 * 2**30).name == "q4_k"
    assert require_pinned("m", "q4_k").name == "q4_k"


def test_require_pinned_with_the_users_own_url_needs_a_known_sha256():
    assert require_pinned("gemma3-270m", source_url="https://example.org/g.gguf").name == "q4_k_m"  # catalog sha
    with pytest.raises(UsageError) as info:
        require_pinned("tiny-llama", source_url="https://example.org/t.gguf")
    assert "install a pinned quantization" not in info.value.hint and "--allow-unpinned" in info.value.hint


def test_require_pinned_unknown_names_and_quants_are_usage_errors():
    with pytest.raises(UsageError, match="unknown model"):
        require_pinned("alpaca")
    with pytest.raises(UsageError, match="no quantization"):
        require_pinned("chinese-alpaca-2-1.3b", "q5_k")
