"""`edgekit provision` end to end on a stand-in over real SSH: real build, real model, real systemd service."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest

from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport

pytestmark = pytest.mark.e2e
UNIT = "edgekit-llama-server"
WATCHED = "/etc/edgekit/llama-server.env /etc/edgekit/api-key /etc/systemd/system/edgekit-llama-server.service " \
          "/opt/edgekit/llama.cpp/current/bin/llama-server /opt/edgekit/models/gemma3-270m/gemma3-270m-q4_k_m.gguf"


def sh(served, command: str) -> str:
    with Transport(parse_target(served.target)) as t:
        return t.sudo(command).stdout.strip()


def main_pid(served) -> int:
    return int(sh(served, f"systemctl show -p MainPID --value {UNIT}"))


def chat(url: str, key: str | None, content: str, max_tokens: int = 48) -> tuple[int, dict | str]:
    body = json.dumps({"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_health(url: str, timeout: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url}/health not 200 within {timeout}s")


def test_first_provision_converged(served_standin):
    out = json.loads(served_standin.first_run.stdout)
    statuses = {s["step"]: s["status"] for s in out["steps"]}
    assert statuses["service"] == "changed" and statuses["model file: gemma3-270m"] == "changed"
    assert all(s != "failed" for s in statuses.values())
    assert out["answer"], "the smoke completion returned text"
    assert "API key (shown once" in served_standin.first_run.stderr


def test_second_provision_changes_nothing(served_standin):
    before = sh(served_standin, f"stat -c '%n %Y' {WATCHED}")
    pid = main_pid(served_standin)
    start = time.monotonic()
    res = served_standin.cli(*served_standin.provision_args("--json"))
    took = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["changed"] == 0, [s for s in out["steps"] if s["status"] != "ok"]
    assert "no changes" in res.stderr
    assert sh(served_standin, f"stat -c '%n %Y' {WATCHED}") == before
    assert main_pid(served_standin) == pid
    assert took < 60, f"an idempotent run took {took:.0f}s"


def test_dry_run_prints_plan_and_changes_nothing(served_standin):
    pid = main_pid(served_standin)
    res = served_standin.cli(*served_standin.provision_args("--dry-run", "--ctx", "1024"))
    assert res.returncode == 0, res.stderr
    assert "would-change" in res.stderr and "llama-server.env" in res.stderr
    assert "nothing was changed" in res.stderr
    assert "LLAMA_ARG_CTX_SIZE=2048" in sh(served_standin, "cat /etc/edgekit/llama-server.env")
    assert main_pid(served_standin) == pid


def test_chinese_chat_with_key_and_401_without(served_standin):
    status, body = chat(served_standin.url, served_standin.api_key, "介绍一下北京")
    assert status == 200, body
    answer = body["choices"][0]["message"]["content"]
    assert answer.strip()
    assert body["usage"]["completion_tokens"] > 0
    status, body = chat(served_standin.url, None, "介绍一下北京")
    assert status == 401
    status, body = chat(served_standin.url, "wrong-key", "hi")
    assert status == 401


def test_status_reports_service(served_standin):
    res = served_standin.cli("status", served_standin.target, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["active"] == "active" and info["enabled"] == "enabled"
    assert info["health"] == "ok"
    assert info["model"].endswith("gemma3-270m-q4_k_m.gguf")
    assert info["build"]["version"] and info["slots"]["total"] == 2


def test_killed_server_is_restarted(served_standin):
    pid = main_pid(served_standin)
    sh(served_standin, f"kill -9 {pid}")
    time.sleep(0.5)
    took = wait_health(served_standin.url, timeout=60)
    new = main_pid(served_standin)
    assert new not in (0, pid)
    assert took < 30


def test_service_survives_reboot(served_standin):
    sb = served_standin.standin
    with Transport(parse_target(served_standin.target)) as t:
        t.sudo("systemctl reboot", check=False)
    time.sleep(2)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not sb.ssh_ready():
        time.sleep(0.5)
    assert sb.ssh_ready(), "stand-in did not come back from reboot"
    wait_health(served_standin.url, timeout=90)
    assert sh(served_standin, f"systemctl is-active {UNIT}") == "active"


def test_ctx_change_restarts_once_and_rollback_restores(served_standin):
    pid = main_pid(served_standin)
    res = served_standin.cli(*served_standin.provision_args("--json", "--ctx", "1024"))
    assert res.returncode == 0, res.stderr
    steps = {s["step"]: s for s in json.loads(res.stdout)["steps"]}
    assert steps["server settings"]["status"] == "changed"
    assert steps["service"]["status"] == "changed" and "restart" in steps["service"]["message"]
    assert steps["llama-compile"]["status"] == "ok" and steps["model file: gemma3-270m"]["status"] == "ok"
    assert "LLAMA_ARG_CTX_SIZE=1024" in sh(served_standin, "cat /etc/edgekit/llama-server.env")
    assert main_pid(served_standin) != pid
    env = sh(served_standin, "cat /etc/edgekit/llama-server.env /etc/edgekit/llama-server.env.previous; readlink "
                             "/opt/edgekit/llama.cpp/current")
    dry = served_standin.cli("rollback", served_standin.target, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert sh(served_standin, "cat /etc/edgekit/llama-server.env /etc/edgekit/llama-server.env.previous; readlink "
                              "/opt/edgekit/llama.cpp/current") == env, "a dry run changes nothing"
    planned = {s["step"]: s["commands"] for s in json.loads(dry.stdout)["steps"] if s["status"] == "would-change"}
    assert {"settings", "restart", "health"} <= set(planned), planned
    res = served_standin.cli("rollback", served_standin.target, "--json")
    assert res.returncode == 0, res.stderr
    assert "settings restored" in res.stderr
    ran = {s["step"]: s["commands"] for s in json.loads(res.stdout)["steps"] if s["status"] == "changed"}
    assert {k: v for k, v in ran.items() if k != "last healthy"} == planned, "the dry run printed what ran"
    assert "LLAMA_ARG_CTX_SIZE=2048" in sh(served_standin, "cat /etc/edgekit/llama-server.env")
    wait_health(served_standin.url, timeout=60)
    again = served_standin.cli(*served_standin.provision_args("--json"))
    assert json.loads(again.stdout)["changed"] == 0, again.stderr


def test_model_change_keeps_old_model_and_rollback_restores(served_standin, model_server, tiny_llama_file):
    model_server.add("edgekit/tiny-llama", "tiny-llama-f32.gguf", tiny_llama_file)
    gemma = "/opt/edgekit/models/gemma3-270m/gemma3-270m-q4_k_m.gguf"
    args = served_standin.provision_args("--json")
    i = args.index("--model")
    args[i + 1] = "tiny-llama"
    pid = main_pid(served_standin)
    res = served_standin.cli(*args)
    assert res.returncode == 0, res.stderr
    steps = {s["step"]: s for s in json.loads(res.stdout)["steps"]}
    assert steps["model file: tiny-llama"]["status"] == "changed"
    assert steps["service"]["status"] == "changed"
    env = sh(served_standin, "cat /etc/edgekit/llama-server.env")
    assert "LLAMA_ARG_MODEL=/opt/edgekit/models/tiny-llama/tiny-llama-f32.gguf" in env
    assert main_pid(served_standin) != pid
    assert sh(served_standin, f"test -f {gemma} && echo kept") == "kept"   # the old model stays
    status, body = chat(served_standin.url, served_standin.api_key, "hello", max_tokens=4)
    assert status == 200 and body["model"] == "tiny-llama", body
    res = served_standin.cli("rollback", served_standin.target)
    assert res.returncode == 0, res.stderr
    assert f"LLAMA_ARG_MODEL={gemma}" in sh(served_standin, "cat /etc/edgekit/llama-server.env")
    wait_health(served_standin.url, timeout=60)
    again = served_standin.cli(*served_standin.provision_args("--json"))
    assert json.loads(again.stdout)["changed"] == 0, again.stderr


def test_security_exposure(served_standin):
    out = sh(served_standin, f"systemd-analyze security --no-pager {UNIT}")
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out)[1])
    print(out.splitlines()[-1])
    assert score <= 5.0, out.splitlines()[-1]


@pytest.mark.parametrize("args, code, text", [
    (["--model", "chinese-alpaca-2-13b"], 2, "chinese-alpaca-2"),
    (["--port", "22"], 5, "port 22"),
    (["--model", "chinese-alpaca-2-7b-64k:q8_0", "--ctx", "65536"], 5, "GiB short"),
])
def test_bad_input_is_one_clear_line(served_standin, args, code, text):
    base = served_standin.provision_args()
    # replace the model/port given by provision_args with the test's own
    for flag in ("--model", "--port"):
        if flag in args:
            i = base.index(flag)
            del base[i:i + 2]
    res = served_standin.cli(*base, *args)
    assert res.returncode == code, res.stderr
    error = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert error and text in error[0], res.stderr
    assert "Traceback" not in res.stderr
    assert sh(served_standin, f"systemctl is-active {UNIT}") == "active"


def test_no_sudo_is_exit_3_and_changes_nothing(served_standin):
    args = served_standin.provision_args()
    args[1] = f"guest@{served_standin.target}"
    res = served_standin.cli(*args)
    assert res.returncode == 3, res.stderr
    assert "error:" in res.stderr and "hint:" in res.stderr
