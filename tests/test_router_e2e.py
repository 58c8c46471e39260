"""Several models on one stand-in (llama-server's router mode), for real: gemma3-270m and SmolLM2-135M-Instruct from
PyPI, fetched by the device from the Hub-like model server, served by one unit. Requests naming each model are
answered by that model with its own chat format; with --models-max 1 the second model unloads the first; the
service never restarts; a second provision changes nothing; `models use` moves the default."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.served import GEMMA_FILE, GEMMA_REPO, cli_in, gemma_gguf  # noqa: F401  (fixtures)
from tests.test_demo_e2e import smollm2_gguf  # noqa: F401

pytestmark = pytest.mark.e2e

SMOL_REPO, SMOL_FILE = "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS = ("gemma3-270m", "smollm2-135m-instruct")


@pytest.fixture(scope="module")
def router(standin_factory, model_server, gemma_gguf, smollm2_gguf, llama_src, tmp_path_factory,  # noqa: F811
           session_dir):
    sb = standin_factory("t-router")
    model_server.add(GEMMA_REPO, GEMMA_FILE, gemma_gguf)
    model_server.add(SMOL_REPO, SMOL_FILE, smollm2_gguf)
    home = tmp_path_factory.mktemp("router-home")
    cli = cli_in(home, session_dir)
    args = ["provision", sb.name, "-m", MODELS[0], "-m", MODELS[1], "--models-max", "1", "--llama-src",
            str(llama_src), "--cpu", "--hf-endpoint", model_server.endpoint(sb.host_address), "--fetch-on", "device",
            "--allow-unpinned", "--threads", "2", "--ctx", "1024", "--no-metrics", "--json"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-4000:]
    state = json.loads((home / "targets" / f"{sb.name}.json").read_text())
    return {"sb": sb, "cli": cli, "args": args, "first": first, "url": state["url"],
            "key": Path(state["api_key_file"]).read_text().strip()}


def _http(r, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(r["url"] + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {r['key']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.loads(resp.read())


def _ssh(r, command: str) -> str:
    return subprocess.run(["ssh", "-F", str(r["sb"].ssh_config), r["sb"].name, command], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def _unit(r) -> dict:
    return dict(line.split("=", 1) for line in _ssh(r, "systemctl show edgekit-llama-server -p MainPID -p NRestarts")
                .split())


def _status(r) -> dict:
    return {m["id"]: (m.get("status") or {}).get("value") for m in _http(r, "/models")["data"]}


def test_each_model_answers_in_its_own_format_and_the_last_used_stays_loaded(router):
    before = _unit(router)
    steps = {s["step"]: s for s in json.loads(router["first"].stdout)["steps"]}
    assert steps["models fit together"]["message"].startswith("--models-max 1: 2 of 2 fit")
    assert "LLAMA_ARG_MODELS_MAX=1" in _ssh(router, "sudo cat /etc/edgekit/llama-server.env")
    formats = {MODELS[0]: "<start_of_turn>", MODELS[1]: "<|im_start|>"}
    for name in (MODELS[0], MODELS[1], MODELS[0]):
        answer = _http(router, "/v1/chat/completions", {"model": name, "max_tokens": 8, "temperature": 0,
                                                         "messages": [{"role": "user", "content": "Say hi."}]})
        assert answer["model"] == name and answer["choices"][0]["message"]["content"].strip()
        prompt = _http(router, "/apply-template", {"model": name, "messages": [{"role": "user", "content": "x"}]})
        assert formats[name] in prompt["prompt"], (name, prompt["prompt"][:200])
        loaded = [m for m, s in _status(router).items() if s == "loaded"]
        assert loaded == [name], f"--models-max 1: only {name} stays loaded, got {_status(router)}"
    assert _unit(router) == before, "switching models never restarts the service"


def test_a_second_provision_changes_nothing_and_status_lists_the_models(router):
    again = router["cli"](*router["args"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["changed"] == 0
    status = router["cli"]("status", router["sb"].name, "--json")
    info = json.loads(status.stdout)
    assert {m["id"] for m in info["models"]} == set(MODELS) and info["models_max"] == "1"
    loaded = [m for m in info["models"] if m["status"] == "loaded"]
    assert len(loaded) == 1 and loaded[0]["rss_bytes"] > 50 * 2**20       # the loaded child's memory


def test_models_use_moves_the_default_and_ask_follows_it(router):
    sb = router["sb"]
    res = router["cli"]("models", "use", sb.name, MODELS[1])
    assert res.returncode == 0, res.stderr
    again = router["cli"]("models", "use", sb.name, MODELS[1], "--dry-run")
    assert "is the default already" in again.stderr
    asked = router["cli"]("ask", sb.name, "In one word: hello?", "--max-tokens", "8")
    assert asked.returncode == 0, asked.stderr
    deadline = time.monotonic() + 30
    while _status(router).get(MODELS[1]) != "loaded" and time.monotonic() < deadline:
        time.sleep(1)
    assert _status(router)[MODELS[1]] == "loaded"
    wrong = router["cli"]("models", "use", sb.name, "nosuch")
    assert wrong.returncode == 2 and "is not one of the models" in wrong.stderr


@pytest.mark.needs("openai")
def test_the_openai_client_chooses_the_model_by_its_model_field(router):
    """The official `openai` package against the router: it lists both models, and each request's `model` field
    picks the model that answers (the answer names it)."""
    import openai

    client = openai.OpenAI(base_url=router["url"] + "/v1", api_key=router["key"], max_retries=0, timeout=300)
    assert sorted(m.id for m in client.models.list()) == sorted(MODELS)
    for name in (MODELS[1], MODELS[0]):
        answer = client.chat.completions.create(model=name, max_tokens=8, temperature=0,
                                                messages=[{"role": "user", "content": "Say hi."}])
        assert answer.model == name and answer.choices[0].message.content.strip(), answer
