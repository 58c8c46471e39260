"""Talking to a real llama-server (CPU build, Gemma 3 270M) on a stand-in: ask, chat in a real terminal (tmux),
the server's own templates against edgekit's formats, and the failure cases with the server's real answers.

`served_endpoint` yields an Endpoint (url, api_key) of a llama-server this module controls (own port, small
context for the overflow test, one slot), started with systemd-run on the stand-in that the session's
`served_standin` fixture provisioned, from the build and model `edgekit provision` installed there.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TEST_CACHE, run_cli

from edgekit.chat.client import AuthFailed, ContextOverflow, LlamaClient, ServerUnreachable
from edgekit.chat.endpoint import Endpoint
from edgekit.chat import prompts
from edgekit.chat.prompts import Turn, format_prompt

pytestmark = pytest.mark.e2e

MODEL = "gemma3-270m"
GGUF = TEST_CACHE / "gemma3-270m-q4_k_m.gguf"
PORT = 8081
CTX = 1024
UNIT = "edgekit-chat-test"
SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"
CJK = re.compile(r"[\u4e00-\u9fff]")
LOADING_SEEN: list[str] = []       # the server's 503 messages while served_endpoint waited for it
# Greedy decoding of this question makes Gemma 3 270M answer with Chinese text (checked on build 0c1e570).
CHINESE_QUESTION = "把这句话翻译成中文：I love Beijing."
BUILTIN_TEMPLATE = prompts.LLAMA_CPP_TEMPLATE


def _ssh(sb, command: str, input: bytes | None = None, check: bool = True, timeout: float = 300):
    r = subprocess.run(["ssh", "-F", str(sb.ssh_config), sb.name, command], input=input, capture_output=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{command!r} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return r


def install_llama_server(sb) -> str:
    """The build and the model that `edgekit provision` installed on the served stand-in; their model path."""
    remote = f"/opt/edgekit/models/{MODEL}/{GGUF.name}"
    _ssh(sb, f"test -x /opt/edgekit/llama.cpp/current/bin/llama-server && test -f {remote}")
    return remote


def start_llama_server(sb, key: str | None, port: int = PORT, ctx: int = CTX, unit: str = UNIT,
                       template: str = "gemma", loading: list | None = None) -> Endpoint:
    """Run llama-server under systemd-run on the stand-in and wait for /health (503 messages go to `loading`).

    `--no-jinja` makes `--chat-template NAME` pick llama.cpp's built-in template of that name; with Jinja on
    (the default) the name itself would be taken as the template text.
    """
    remote = install_llama_server(sb)
    _ssh(sb, f"sudo systemctl stop {unit} 2>/dev/null; sudo systemctl reset-failed {unit} 2>/dev/null; true")
    _ssh(sb, f"sudo systemd-run --unit={unit} -p Restart=no /opt/edgekit/llama.cpp/current/bin/llama-server "
             f"-m {remote} --host 0.0.0.0 --port {port} {f'--api-key {key}' if key else ''} -t 2 -c {ctx} -np 1 "
             f"--no-jinja --chat-template {template} --no-webui")
    ep = Endpoint(url=f"http://{sb.address}:{port}", api_key=key, target=None)
    client = LlamaClient(ep, timeout=30)
    deadline = time.monotonic() + 120
    while True:
        try:
            client.wait_ready(timeout=120, interval=0.05,
                              on_wait=lambda t, m: loading.append(m) if loading is not None else None)
            return ep
        except ServerUnreachable:
            if time.monotonic() > deadline:
                log = _ssh(sb, f"sudo journalctl -u {unit} --no-pager | tail -30", check=False).stdout.decode()
                raise AssertionError(f"llama-server did not come up:\n{log}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def served_endpoint(served_standin):
    """(url, api_key) of a second, test-controlled llama-server (own port, small ctx, one slot) on the stand-in
    that `edgekit provision` set up, from the build and model it installed."""
    sb = served_standin.standin
    key = secrets.token_hex(16)
    ep = start_llama_server(sb, key, loading=LOADING_SEEN)
    yield ep
    _ssh(sb, f"sudo systemctl stop {UNIT}", check=False)


def _ask(ep: Endpoint, *args: str, **kw):
    return run_cli("ask", "--url", ep.url, "--api-key", ep.api_key, "--model", MODEL, *args, timeout=300, **kw)


def test_ask_returns_a_real_answer(served_endpoint):
    r = _ask(served_endpoint, "-v", "-n", "64", "--seed", "1", "介绍一下北京")
    assert r.returncode == 0, r.stderr
    answer = r.stdout.strip()
    assert len(answer) > 5 and "\ufffd" not in answer
    assert re.search(r"answer \d+ tokens in [\d.]+s \([\d.]+ tok/s\)", r.stderr), r.stderr
    print("answer:", answer)


def test_ask_the_provisioned_target_by_name(served_standin):
    """No --url, no --api-key: the URL and key come from what `edgekit provision` stored on the controller."""
    r = run_cli("ask", served_standin.target, "-n", "32", "请列举5条文明乘车的建议", timeout=300,
                env={"EDGEKIT_HOME": str(served_standin.home)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "\ufffd" not in r.stdout


def test_ask_json_and_raw_completion(served_endpoint):
    r = _ask(served_endpoint, "--json", "-n", "16", "你好")
    data = json.loads(r.stdout)
    assert data["choices"][0]["message"]["content"] and data["usage"]["completion_tokens"] > 0
    r = _ask(served_endpoint, "--raw", "--json", "-n", "16", "你好")
    data = json.loads(r.stdout)
    assert data["content"] and data["prompt"].startswith("<bos><start_of_turn>user\n" + SYSTEM)
    assert data["tokens_evaluated"] > 10


def test_edgekit_format_equals_the_servers_template(served_endpoint):
    """llama.cpp's built-in `gemma` template (what the service runs) builds the same prompt as --raw does."""
    client = LlamaClient(served_endpoint)
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "介绍一下北京"},
            {"role": "assistant", "content": "北京是中国的首都。"}, {"role": "user", "content": "还有呢？"}]
    got = client.apply_template(msgs)
    want = format_prompt("gemma", SYSTEM, [Turn("介绍一下北京", "北京是中国的首都。"), Turn("还有呢？")])
    assert got.removeprefix("<bos>") == want


def test_loading_model_was_waited_for(served_endpoint):
    """served_endpoint polled /health from the moment llama-server started: it saw the real 503 and waited."""
    assert LOADING_SEEN, "llama-server answered before loading? (no 503 seen)"
    assert all(m.endswith("is not ready: Loading model") for m in LOADING_SEEN)


@pytest.mark.parametrize("family", ["llama2", "llama3"])
def test_llama_cpp_builtin_templates_match_the_seed_formats(served_endpoint, served_standin, family):
    """llama-server's built-in template builds the seed's prompt (text only; the model does not matter)."""
    sb = served_standin.standin
    ep = start_llama_server(sb, None, port=8090, ctx=256, unit="edgekit-chat-tpl", template=BUILTIN_TEMPLATE[family])
    try:
        client = LlamaClient(ep)
        first = client.apply_template([{"role": "system", "content": SYSTEM},
                                       {"role": "user", "content": "介绍一下北京"}])
        assert first == format_prompt(family, SYSTEM, [Turn("介绍一下北京")])
        more = client.apply_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Q1"},
                                      {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}])
        ours = format_prompt(family, SYSTEM, [Turn("Q1", "A1"), Turn("Q2")])
        if family == "llama2":   # gradio_demo.py puts a space before the answer; llama.cpp does not
            ours = ours.replace("[/INST] A1", "[/INST]A1")
        assert more == ours
    finally:
        _ssh(sb, "sudo systemctl stop edgekit-chat-tpl", check=False)


def test_wrong_key_server_down_and_context_overflow_real(served_endpoint, standin_factory):
    bad = Endpoint(url=served_endpoint.url, api_key="wrong", api_key_file="/x/t-chat.api-key")
    with pytest.raises(AuthFailed) as e:
        LlamaClient(bad).chat([{"role": "user", "content": "hi"}])
    assert "Invalid API Key" in e.value.message and "/x/t-chat.api-key" in e.value.hint
    r = run_cli("ask", "--url", served_endpoint.url.replace(str(PORT), "8099"), "hi")
    assert r.returncode == 3 and "cannot reach llama-server" in r.stderr
    client = LlamaClient(served_endpoint)
    with pytest.raises(ContextOverflow) as e:
        list(client.chat([{"role": "user", "content": "北京 " * 2000}], stream=True))
    print("server said:", e.value.server_message)
    assert "context" in e.value.server_message
    r = _ask(served_endpoint, "北京 " * 2000)
    assert r.returncode == 4 and "context" in r.stderr


# -- a real terminal ----------------------------------------------------------------------------------------------

class Tmux:
    def __init__(self, tmp_path: Path):
        self.sock = f"ek-{os.getpid()}"
        self.name = "chat"

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-u", "-L", self.sock, *args], capture_output=True, text=True,
                              check=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-S", "-200", "-t", self.name)

    def wait_for(self, predicate, timeout: float = 120, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{self.screen()}")

    def type(self, text: str) -> None:
        self("send-keys", "-t", self.name, "-l", text)
        self("send-keys", "-t", self.name, "Enter")


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    subprocess.run(["tmux", "-L", t.sock, "kill-server"], capture_output=True)


def test_streaming_chat_in_a_real_terminal(served_endpoint, tmux, tmp_path):
    env = {"EDGEKIT_HOME": os.environ["EDGEKIT_HOME"], "LANG": "C.UTF-8", "PATH": os.environ["PATH"],
           "TERM": "xterm-256color"}
    cmd = (f"{sys.executable} -m edgekit chat --url {served_endpoint.url} --api-key {served_endpoint.api_key} "
           f"--model {MODEL} -n 96 --temp 0")
    tmux("new-session", "-d", "-s", tmux.name, "-x", "160", "-y", "60",
         "env -i " + " ".join(f"{k}={v}" for k, v in env.items()) + " " + cmd + "; sleep 30")
    tmux.wait_for(lambda s: "you>" in s, what="the prompt")

    tmux.type(CHINESE_QUESTION)
    assert "you> " + CHINESE_QUESTION in tmux.screen()      # the typed Chinese echoes intact
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        screen = tmux.screen()
        answer = screen.split("assistant>", 1)[1] if "assistant>" in screen else ""
        done = answer.count("you>") >= 1
        answer = answer.split("you>")[0].strip()
        if answer and (not seen or answer != seen[-1]):
            seen.append(answer)
        if done:
            break
        time.sleep(0.03)
    final = seen[-1]
    print(f"{len(seen)} screens while streaming; final answer: {final!r}")
    assert len(seen) >= 3, seen                                    # tokens arrived one screen at a time
    assert all(final.startswith(s[:len(s) - 1]) for s in seen[:-1])  # each screen extends the last
    assert "\ufffd" not in final and CJK.search(final), final

    saved = tmp_path / "chat.json"
    tmux.type(f"/save {saved}")
    tmux.wait_for(lambda s: "saved to" in s, what="/save")
    data = json.loads(saved.read_text(encoding="utf-8"))
    assert [m["role"] for m in data["messages"]] == ["system", "user", "assistant"]
    assert data["messages"][1]["content"] == CHINESE_QUESTION and CJK.search(data["messages"][2]["content"])

    # context overflow: the server's error is shown, the conversation is kept, the next question works
    tmux.type("北京 " * 1500)            # > 1024 tokens of context
    screen = tmux.wait_for(lambda s: "conversation so far is kept" in s, what="the overflow error")
    assert "context" in screen.split("北京 北京 北京")[-1]
    tmux.type("/history")
    tmux.type("谢谢")
    tmux.wait_for(lambda s: s.count("assistant>") >= 2 and s.rstrip().endswith("you>"), what="second answer")
    tmux.type(f"/save {saved}")
    tmux.wait_for(lambda s: s.count("saved to") >= 2, what="second /save")
    data = json.loads(saved.read_text(encoding="utf-8"))
    assert [m["content"] for m in data["messages"] if m["role"] == "user"] == [CHINESE_QUESTION, "谢谢"]
    tmux.type("/quit")
