"""The build must know every setting edgekit writes: the parser of `llama-server --help` on the real output of the
pinned build, the names the env template writes for each shape of service, and the refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.errors import UNSUITABLE
from edgekit.facts.deployed import MISSING, ServerEnvNames
from edgekit.facts.build import parse_env_names
from edgekit.llamacpp.server_env import UnknownServerSetting, names_written, require_known, unknown_names
from edgekit.llamacpp.spec import LLAMA_CPP_VERSION
from edgekit.service.steps import ServiceOptions

# `llama-server --help` of the pinned build (b11312 commit 0c1e570, CPU, from the llama-cpp-python 0.3.36 sdist, as
# `edgekit provision --cpu` built it on a stand-in), captured verbatim with `llama-server --help > FILE 2>&1`.
HELP = (Path(__file__).parent / "fixtures" / "llama_server_help_b11312.txt").read_text()
KNOWN = parse_env_names(HELP)

SHAPES = {
    "default": (ServiceOptions(), False),
    "every optional setting": (ServiceOptions(threads=4, cache_type_kv="q8_0", n_ctx=2048,
                                              cors_origin="http://dash.lan:3000"), False),
    "no key on loopback": (ServiceOptions(api_key=False, host="127.0.0.1", cors_origin="localhost"), False),
    "router": (ServiceOptions(threads=2), True),
}


def test_the_capture_is_the_pinned_build():
    assert LLAMA_CPP_VERSION == "b11312" and "--cors-origins" in HELP


def test_parser_reads_every_env_note_of_the_real_help():
    assert HELP.count("(env: ") == len(KNOWN) > 100
    for name in ("LLAMA_ARG_PORT", "LLAMA_ARG_CORS_ORIGINS", "LLAMA_ARG_CORS_CREDENTIALS", "LLAMA_ARG_AGENT",
                 "LLAMA_ARG_UI_MCP_PROXY", "LLAMA_ARG_MODELS_PRESET", "LLAMA_ARG_API_KEY_FILE"):
        assert name in KNOWN, name
    assert "LLAMA_ARG_SPEC_DRAFT_N_MAX" in KNOWN and "LLAMA_ARG_NO_CORS_CREDENTIALS" not in KNOWN


@pytest.mark.parametrize("shape", SHAPES)
def test_the_pinned_build_knows_every_name_edgekit_writes(shape):
    opts, router = SHAPES[shape]
    written = names_written(opts, router)
    assert unknown_names(written, KNOWN) == []
    assert "LLAMA_ARG_CORS_ORIGINS" in written and "LLAMA_ARG_CORS_CREDENTIALS" in written
    assert require_known(KNOWN, written, "b11312-abc", "orin-1").startswith(
        f"its llama-server knows the {len(written)} LLAMA_ARG_* settings")


def test_names_follow_the_settings():
    plain, router = names_written(), names_written(router=True)
    assert "LLAMA_ARG_MODEL" in plain and "LLAMA_ARG_MODELS_PRESET" not in plain
    assert "LLAMA_ARG_MODELS_PRESET" in router and "LLAMA_ARG_MODEL" not in router
    assert "LLAMA_ARG_THREADS" in names_written(ServiceOptions(threads=3)) and "LLAMA_ARG_THREADS" not in plain
    assert "LLAMA_ARG_API_KEY_FILE" not in names_written(ServiceOptions(api_key=False, host="127.0.0.1"))


def test_a_build_whose_help_lacks_a_name_is_refused_naming_it_and_the_build():
    written = names_written()
    with pytest.raises(UnknownServerSetting) as e:
        require_known(KNOWN - {"LLAMA_ARG_CORS_ORIGINS"}, written, "b9999-0d16a68f", "orin-1", "b11312-0d16a68f")
    assert e.value.exit_code == UNSUITABLE == 5 and e.value.names == ["LLAMA_ARG_CORS_ORIGINS"]
    assert e.value.message.startswith("the llama.cpp build b9999-0d16a68f on orin-1 does not know "
                                      "LLAMA_ARG_CORS_ORIGINS: its `llama-server --help` lists no such")
    assert e.value.message.endswith("the service and `current` (b11312-0d16a68f) are unchanged")
    assert "--llama-src" in e.value.hint


def test_help_that_lists_nothing_is_refused_and_a_missing_binary_is_not_known_yet():
    with pytest.raises(UnknownServerSetting, match="lists no LLAMA_ARG_"):
        require_known(parse_env_names("error while loading shared libraries: libggml.so"), names_written(),
                      "b1-x", "orin-1")
    assert require_known(None, names_written(), "b1-x", "orin-1") is None


def test_the_fact_parses_its_command_output():
    fact = ServerEnvNames("/opt/edgekit/llama.cpp/b1 x/bin/llama-server")
    assert "'/opt/edgekit/llama.cpp/b1 x/bin/llama-server' --help" in fact.command
    assert fact.parse(f"{MISSING}\n") is None
    assert fact.parse("@@present\n" + HELP) == KNOWN


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_the_parser_never_crashes_and_invents_nothing(text):
    names = parse_env_names(text)
    assert all(f"(env: {n})" in text for n in names)
    parsed = ServerEnvNames("/x").parse(text)
    assert parsed is None or parsed == parse_env_names(text.partition("\n")[2])
