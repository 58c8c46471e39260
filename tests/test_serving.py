"""Serving the way llama.cpp intends on small boards: the prompt-cache bound and idle sleep (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.errors import UsageError
from edgekit.models import catalog, fit
from edgekit.service.settings import parse_env, render_env, render_preset, render_unit, router_model
from edgekit.settings import resolve
from tests.conftest import run_cli_inprocess as run_cli
from tests.test_service import variables

ROOT = Path(__file__).resolve().parent.parent


def test_prompt_cache_is_half_the_headroom_in_64_mib_steps_capped_at_llamacpps_default():
    assert fit.prompt_cache_mib(1000 * fit.MiB) == 448            # 500 -> 448 (64 MiB steps)
    assert fit.prompt_cache_mib(511 * fit.MiB) == 0               # 255: under 256 MiB the cache is off
    assert fit.prompt_cache_mib(512 * fit.MiB) == 256
    assert fit.prompt_cache_mib(64 * fit.GiB) == fit.CACHE_RAM_DEFAULT_MIB == 8192
    assert fit.prompt_cache_mib(-fit.GiB) == 0


def test_orin_nano_8gb_fit_states_the_prompt_cache_bound_and_the_env_file_carries_it():
    """The shipped env file (systemd/, the default model on an 8 GB Orin Nano) carries the bound `models fit`
    prints for that board; a 7B at the context that fits leaves no room, so its cache is off."""
    res = run_cli("models", "fit", "chinese-alpaca-2-1.3b", "--board", "orin-nano-8gb", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["cache_ram_from"] == "fit"
    assert report["cache_ram_mib"] == fit.prompt_cache_mib(report["usable_bytes"] - report["need_bytes"]
                                                           + report["cache_ram_bytes"]) > 0
    assert report["need_bytes"] <= report["usable_bytes"]          # the cache is counted and still fits
    env = parse_env((ROOT / "systemd/llama-server.env").read_text())
    assert env["LLAMA_ARG_CACHE_RAM"] == str(report["cache_ram_mib"])
    assert env["LLAMA_ARG_MODEL"].endswith(catalog.get("chinese-alpaca-2-1.3b").quant(report["quant"]).file)

    seven = run_cli("models", "fit", "chinese-alpaca-2-7b-64k", "--board", "orin-nano-8gb")
    assert seven.returncode == 0
    assert "no prompt cache (--cache-ram 0" in seven.stderr + seven.stdout


def test_a_prompt_cache_that_does_not_fit_is_refused_with_the_bound_that_does():
    res = run_cli("models", "fit", "chinese-alpaca-2-7b-64k", "--board", "orin-nano-8gb", "--cache-ram", "8192")
    assert res.returncode == 5
    assert "prompt cache 8192 MiB (--cache-ram)" in res.stderr
    assert "hint: try --cache-ram 0 " in res.stderr
    ok = run_cli("models", "fit", "chinese-alpaca-2-1.3b", "--board", "orin-nano-8gb", "--cache-ram", "1024", "--json")
    assert json.loads(ok.stdout)["cache_ram_mib"] == 1024


def test_env_file_carries_cache_ram_and_the_unit_passes_sleep_idle_seconds():
    env = render_env(variables(cache_ram_mib=0, sleep_idle_seconds=600))
    values = parse_env(env)
    assert values["LLAMA_ARG_CACHE_RAM"] == "0"
    # llama-server reads --sleep-idle-seconds from no environment variable (b11312 common/arg.cpp): the unit
    # passes the env file's EDGEKIT_SERVER_ARGS as arguments (systemd splits an unquoted $VAR at whitespace)
    assert values["EDGEKIT_SERVER_ARGS"] == "--sleep-idle-seconds 600"
    assert "ExecStart=/opt/edgekit/llama.cpp/current/bin/llama-server $EDGEKIT_SERVER_ARGS" in render_unit(
        variables()).splitlines()
    plain = parse_env(render_env(variables()))
    assert plain["EDGEKIT_SERVER_ARGS"] == "" and "LLAMA_ARG_CACHE_RAM" not in plain


def test_router_presets_bound_each_models_prompt_cache():
    models = [router_model(name=n, path=f"/m/{n}.gguf", ctx=2048, chat_template=None, sampling={})
              for n in ("a", "b")]
    preset = render_preset(variables(models=models, models_max=2, cache_ram_mib=320))
    assert preset.count("cache-ram = 320") == 2
    assert "LLAMA_ARG_CACHE_RAM" not in render_env(variables(models=models, models_max=2, cache_ram_mib=320))


@pytest.mark.parametrize("flags, match", [
    ({"sleep_idle_seconds": 0}, r"--sleep-idle-seconds \(flag\): 0 is out of range"),
    ({"sleep_idle_seconds": -1}, r"--sleep-idle-seconds \(flag\)"),
    ({"cache_ram_mib": -1}, r"--cache-ram \(flag\): -1 is out of range"),
])
def test_settings_refuse_what_llama_server_would_refuse(flags, match):
    with pytest.raises(UsageError, match=match):
        resolve({"model": "gemma3-270m", **flags})


def test_provision_options_carry_the_settings():
    from edgekit.provision import options

    opts = options(resolve({"model": "gemma3-270m", "allow_unpinned": True, "cache_ram_mib": 0,
                            "sleep_idle_seconds": 300}))
    assert opts.model.cache_ram_mib == 0 and opts.service.sleep_idle_seconds == 300
    inv = options(resolve({"model": "gemma3-270m", "allow_unpinned": True},
                          {"cache_ram_mib": 128, "sleep_idle_seconds": 60}))
    assert inv.model.cache_ram_mib == 128 and inv.service.sleep_idle_seconds == 60


def test_orin_nano_8gb_fit_shows_the_drafts_share_and_lowers_the_context_for_it():
    alone = json.loads(run_cli("models", "fit", "chinese-alpaca-2-7b-64k:q2_k", "--board", "orin-nano-8gb",
                               "--json").stdout)
    res = run_cli("models", "fit", "chinese-alpaca-2-7b-64k:q2_k", "--board", "orin-nano-8gb", "--draft",
                  "chinese-alpaca-2-1.3b:q2_k", "--json")
    assert res.returncode == 0, res.stderr
    paired = json.loads(res.stdout)
    assert paired["draft"] == "chinese-alpaca-2-1.3b:q2_k" and alone["draft"] == ""
    entry, quant = catalog.lookup("chinese-alpaca-2-1.3b:q2_k")
    assert paired["draft_bytes"] == fit.draft_bytes(entry, quant, paired["ctx"]) > 0
    assert paired["ctx"] < alone["ctx"]                     # the context is lowered to leave the draft room
    assert paired["need_bytes"] <= paired["usable_bytes"]
    text = run_cli("models", "fit", "chinese-alpaca-2-7b-64k:q2_k", "--board", "orin-nano-8gb", "--draft",
                   "chinese-alpaca-2-1.3b:q2_k")
    assert "+ draft chinese-alpaca-2-1.3b:q2_k 1.1" in text.stdout + text.stderr
    too_big = run_cli("models", "fit", "chinese-alpaca-2-7b-64k", "--board", "orin-nano-8gb", "--draft",
                      "chinese-alpaca-2-1.3b", "--ctx", "4096")
    assert too_big.returncode == 5 and "--ctx 1792 (the largest context that fits chinese-alpaca-2-7b-64k:q4_k " \
                                      "with its draft)" in too_big.stderr
