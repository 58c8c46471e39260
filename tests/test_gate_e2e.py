"""The build gate and the deploy gate on a real stand-in: a build that dies of SIGILL is refused before anything
switches to it, and a change that leaves the service unhealthy is rolled back to the last healthy state."""

from __future__ import annotations

import json
import re
import shlex
import tarfile

import pytest

from edgekit.llamacpp.gate import GateRefused
from edgekit.digest import sha256_file
from edgekit.llamacpp.packs import InstallPack, fetch_pack, pack_build
from edgekit.facts.device import read_facts
from edgekit.models.tiny import tiny_llama_bytes
from edgekit.remote.plan import Context, run_steps
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from tests.test_provision_e2e import UNIT, chat, main_pid, sh

pytestmark = pytest.mark.e2e
SIGILL_SERVER = "#!/bin/sh\n# stands in for a build compiled with instructions this CPU cannot run\nkill -ILL $$\n"


def _sigill_pack(ctx: Context, tmp_path) -> tuple:
    """A real pack of the device's current build with bin/llama-server replaced by a program that dies of SIGILL."""
    good = fetch_pack(ctx, pack_build(ctx))
    meta = json.loads(good.with_name(good.name.removesuffix(".tar.gz") + ".json").read_text())
    work = tmp_path / "unpacked"
    with tarfile.open(good) as tar:
        tar.extractall(work, filter="data")
    name = "b11312-sigill00"
    (work / meta["name"]).rename(work / name)
    server = work / name / "bin" / "llama-server"
    server.unlink()
    server.write_text(SIGILL_SERVER)
    server.chmod(0o755)
    out = tmp_path / "builds" / f"{name}.tar.gz"
    out.parent.mkdir()
    with tarfile.open(out, "w:gz") as tar:
        tar.add(work / name, arcname=name)
    stamp = {**meta["stamp"], "flags_hash": "sigill00"}
    out.with_name(f"{name}.json").write_text(json.dumps({"name": name, "sha256": sha256_file(out), "stamp": stamp}))
    return out, name


def test_gate_refuses_a_build_that_dies_of_sigill(served_standin, tmp_path):
    pid = main_pid(served_standin)
    with Transport(parse_target(served_standin.target)) as t:
        before = t.run("readlink /opt/edgekit/llama.cpp/current").stdout.strip()
        ctx = Context(t)
        tarball, name = _sigill_pack(ctx, tmp_path)
        ctx.run.facts = read_facts(t)
        with pytest.raises(GateRefused) as refused:
            run_steps(ctx, [InstallPack(tarball)])
        after = t.run("readlink /opt/edgekit/llama.cpp/current").stdout.strip()
        installed = t.run(f"test -e /opt/edgekit/llama.cpp/{name}", check=False).ok
        log = t.sudo(f"cat /var/log/edgekit/gate-{name}.log", check=False)
    message = refused.value.message
    assert "died of SIGILL" in message and "CPU instructions this machine cannot run" in message, message
    assert "`current` is unchanged" in message and refused.value.verdict.signal == "SIGILL"
    assert after == before and not installed, "a refused pack must not be installed or switched to"
    assert main_pid(served_standin) == pid, "the running service must not be touched"
    assert log.ok, "the gate keeps its log on the device"


def test_gate_record_makes_a_second_run_a_noop(served_standin):
    res = served_standin.cli(*served_standin.provision_args("--json"))
    assert res.returncode == 0, res.stderr
    steps = {s["step"]: s for s in json.loads(res.stdout)["steps"]}
    assert steps["llama-gate"]["status"] == "ok" and "passed the gate here" in steps["llama-gate"]["message"]
    assert "on the CPU" in steps["llama-gate"]["message"]


# stands in for a llama.cpp build that lacks one setting edgekit writes: its --help omits the variable
FORGETFUL_SERVER = """#!/bin/sh
if [ "$1" = --help ]; then "$0.real" --help 2>&1 | grep -v 'LLAMA_ARG_CORS_ORIGINS'; exit 0; fi
exec "$0.real" "$@"
"""


def test_a_build_that_does_not_know_a_setting_is_refused_before_anything_changes(served_standin):
    """The real build knows every LLAMA_ARG_* edgekit writes; one whose --help lacks one is refused (exit 5), in the
    dry run and the real run, naming the variable and the build, with the device as it was."""
    dry = served_standin.cli(*served_standin.provision_args("--dry-run", "--json"))
    assert dry.returncode == 0, dry.stderr
    gate = {s["step"]: s for s in json.loads(dry.stdout)["steps"]}["llama-gate"]
    knows = re.search(r"llama-server knows the (\d+) LLAMA_ARG_\* settings edgekit writes", gate["message"])
    written = [line for line in sh(served_standin, "cat /etc/edgekit/llama-server.env").splitlines()
               if line.startswith("LLAMA_ARG_")]
    assert knows and int(knows[1]) >= len(written) > 15, (gate, written)
    prefix = sh(served_standin, "readlink -f /opt/edgekit/llama.cpp/current")
    build = prefix.rsplit("/", 1)[-1]
    server = f"{prefix}/bin/llama-server"
    watched = "/etc/edgekit/llama-server.env /etc/systemd/system/edgekit-llama-server.service"
    before = sh(served_standin, f"stat -c '%n %Y %s' {watched}")
    pid = main_pid(served_standin)
    sh(served_standin, f"mv {server} {server}.real && printf '%s' {shlex.quote(FORGETFUL_SERVER)} > {server} && "
                       f"chmod 755 {server}")
    try:
        runs = [served_standin.cli(*served_standin.provision_args("--dry-run")),
                served_standin.cli(*served_standin.provision_args("--cors-origin", "http://dash.lan:3000"))]
    finally:
        sh(served_standin, f"mv -f {server}.real {server}")
    for res in runs:
        assert res.returncode == 5, res.stderr
        lines = [line for line in res.stderr.splitlines() if line.startswith(("error:", "hint:"))]
        assert lines[0].startswith("error: ") and "does not know LLAMA_ARG_CORS_ORIGINS" in lines[0], res.stderr
        assert f"build {build} on {served_standin.target}" in lines[0], lines[0]
        assert f"the service and `current` ({build}) are unchanged" in lines[0], lines[0]
        assert lines[1].startswith("hint: ") and "--llama-src" in lines[1], res.stderr
    assert sh(served_standin, f"stat -c '%n %Y %s' {watched}") == before, "nothing may change"
    assert "dash.lan" not in sh(served_standin, "cat /etc/edgekit/llama-server.env")
    assert main_pid(served_standin) == pid, "the running service must not be touched"


def test_port_taken_is_refused_before_any_change(served_standin):
    env_before = sh(served_standin, "stat -c %Y /etc/edgekit/llama-server.env")
    sh(served_standin, "systemd-run --unit=edgekit-test-squatter python3 -m http.server 8181 --bind 0.0.0.0; sleep 1")
    try:
        res = served_standin.cli(*served_standin.provision_args("--port", "8181"))
    finally:
        sh(served_standin, "systemctl stop edgekit-test-squatter; true")
    assert res.returncode == 5, res.stderr
    assert "port 8181" in res.stderr and "already in use" in res.stderr
    assert sh(served_standin, "stat -c %Y /etc/edgekit/llama-server.env") == env_before
    assert "LLAMA_ARG_PORT=8080" in sh(served_standin, "cat /etc/edgekit/llama-server.env")


def _by_url(args: list[str]) -> list[str]:
    """The served stand-in's provision arguments for a model by URL (no catalog name: named by its file)."""
    i = args.index("--model")
    return args[:i] + args[i + 2:]


def test_unhealthy_change_rolls_back_to_the_last_healthy_state(served_standin, model_server, tmp_path):
    """A model whose header and tensors disagree: it downloads and verifies, then llama-server cannot load it."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_llama_bytes(head_count=5))
    served = model_server.add("edgekit/broken", "broken.gguf", broken)
    url = model_server.endpoint(served_standin.standin.host_address) + served.url_path
    args = _by_url(served_standin.provision_args("--json", "--model-url", url, "--sha256", served.sha256, "--force"))
    env_before = sh(served_standin, "cat /etc/edgekit/llama-server.env")
    res = served_standin.cli(*args)
    assert res.returncode == 4, res.stderr
    assert "crash-looping" in res.stderr or "failed to start" in res.stderr, res.stderr
    assert "Rolled back to the last healthy state" in res.stderr and "edgekit logs" in res.stderr, res.stderr
    assert sh(served_standin, "cat /etc/edgekit/llama-server.env") == env_before
    assert sh(served_standin, f"systemctl is-active {UNIT}") == "active"
    status, body = chat(served_standin.url, served_standin.api_key, "Say hi.")
    assert status == 200 and body["choices"][0]["message"]["content"]
    info = json.loads(served_standin.cli("status", served_standin.target, "--json").stdout)
    assert info["state"] == "the last healthy state" and info["last_healthy"]["model"] == "gemma3-270m"
    failed = info["last_rollback"]                  # the attempt that failed: what, when, why, back to what
    assert failed["failed_step"] in ("service", "health") and failed["restored"], failed
    assert f"{failed['failed_step']} failed on" in res.stderr and failed["reason"] in res.stderr, failed
    assert "broken" in (failed["attempted"]["model"] or "") and any(c.startswith("model") for c in failed["changed"])
    assert failed["returned_to"] == info["last_healthy"] and failed["at"][:4].isdigit()
    table = " ".join(served_standin.cli("status", served_standin.target).stderr.split())
    assert f"last rollback │ {failed['at']}: {failed['failed_step']} failed after changing" in table, table
    saved = json.loads((served_standin.home / "targets" / f"{served_standin.target}.json").read_text())
    assert saved["model"] == "gemma3-270m", "the controller follows the rollback (chat uses the right format)"


def test_no_rollback_keeps_the_broken_state_then_rollback_recovers(served_standin, model_server, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_llama_bytes(head_count=5))
    served = model_server.add("edgekit/broken", "broken.gguf", broken)
    url = model_server.endpoint(served_standin.standin.host_address) + served.url_path
    args = _by_url(served_standin.provision_args("--model-url", url, "--sha256", served.sha256, "--force",
                                                 "--no-rollback"))
    res = served_standin.cli(*args)
    assert res.returncode == 4 and "Rolled back" not in res.stderr, res.stderr
    assert "/broken/broken.gguf" in sh(served_standin, "grep LLAMA_ARG_MODEL= /etc/edgekit/llama-server.env")
    sh(served_standin, f"for i in $(seq 30); do systemctl is-failed --quiet {UNIT} && break; sleep 1; done; true")
    res = served_standin.cli("rollback", served_standin.target)           # after a crash loop: reset-failed first
    assert res.returncode == 0, res.stderr
    sh(served_standin, "for i in $(seq 60); do curl -sf localhost:8080/health && break; sleep 1; done")
    assert "gemma3-270m" in sh(served_standin, "grep LLAMA_ARG_MODEL= /etc/edgekit/llama-server.env")
