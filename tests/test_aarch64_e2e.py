"""The board's architecture without the board: an aarch64 stand-in under qemu-user emulation, for real.

An Orin Nano identity (with its Cortex-A78AE /proc/cpuinfo) on a Debian arm64 stand-in: its facts say aarch64 and
choose the Orin's CPU level; llama.cpp is cross-compiled on this controller at that level, packed, installed with
the verified pack step and gated there (the arm64 llama-server runs under emulation before `current` moves); the
service answers /health and `edgekit ask`; a second provision changes nothing. A pack recorded as x86_64 is refused
before anything is uploaded, although an x86_64 program runs in the stand-in (its host's kernel runs it natively).
The device helper and the exporter on a bullseye arm64 stand-in (Python 3.9): tests/test_old_python_e2e.py.
docs/aarch64-standin.md says what differs under emulation.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request

import pytest

from tests.served import cli_in
from tests.test_demo_e2e import smollm2_gguf  # noqa: F401  (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.needs("qemu-user-static", "aarch64-cross")]

ORIN_LEVEL = "armv8.2-a+dotprod+fp16"
SMOL_REPO, SMOL_FILE = "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"
CROSS_CCACHE = "/var/cache/edgekit/cross-ccache"       # kept between runs, like the stand-ins' ccache


def _ssh(sb, command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(sb.ssh_config), sb.name, command], capture_output=True, text=True,
                          check=check, timeout=300)


@pytest.fixture(scope="module")
def arm(standin_factory, model_server, smollm2_gguf, llama_src, tmp_path_factory, session_dir):  # noqa: F811
    start = time.monotonic()
    sb = standin_factory("t-arm", "orin-nano-8gb", arch="arm64")
    booted = time.monotonic() - start
    model_server.add(SMOL_REPO, SMOL_FILE, smollm2_gguf)
    home = tmp_path_factory.mktemp("arm-home")
    os.environ.setdefault("CCACHE_DIR", CROSS_CCACHE)     # before cli_in, which copies the environment
    cli = cli_in(home, session_dir)
    provision = ["provision", sb.name, "--model", "smollm2-135m-instruct", "--llama-src", str(llama_src), "--cpu",
                 "--hf-endpoint", model_server.endpoint(sb.host_address), "--fetch-on", "device",
                 "--allow-unpinned", "--threads", "2", "--ctx", "512", "--no-metrics", "--json"]
    return {"sb": sb, "cli": cli, "home": home, "src": str(llama_src), "provision": provision, "booted": booted}


def test_facts_say_aarch64_and_choose_the_orin_level(arm):
    res = arm["cli"]("facts", arm["sb"].name, "--json")
    assert res.returncode == 0, res.stderr
    facts = json.loads(res.stdout)
    assert facts["arch"] == "aarch64" and facts["jetson"]["module"].startswith("Jetson Orin Nano")
    assert facts["cpu"]["model"] == "Cortex-A78AE" and {"asimddp", "fphp", "asimdhp"} <= set(facts["cpu"]["flags"])
    assert facts["cpu_level"] == ORIN_LEVEL
    assert facts["systemd"] and facts["sudo"] == "nopasswd"
    print(f"aarch64 stand-in booted to ssh in {arm['booted']:.0f}s")


def test_what_differs_under_emulation_is_handled_in_the_standin_only(arm):
    """The boot units qemu-user breaks are handled by the stand-in's own drop-ins: nothing failed at boot; and what
    the stand-in runs is emulated aarch64 code (docs/aarch64-standin.md records what this prints)."""
    sb = arm["sb"]
    failed = _ssh(sb, "systemctl --failed --no-legend --plain", check=False).stdout
    warnings = _ssh(sb, "sudo journalctl -b -p warning --no-pager -o cat | tail -n 40", check=False).stdout
    print(f"failed units: {failed.strip() or 'none'}\nboot warnings:\n{warnings}")
    dropins = _ssh(sb, "grep -rl 'qemu-user emulation only' /etc/systemd/system || true").stdout.split()
    assert dropins and all(".d/50-edgekit-emulated.conf" in d and "/edgekit" not in d for d in dropins), dropins
    assert failed.strip() == "", failed
    start = time.monotonic()
    out = _ssh(sb, "python3 -c 'import hashlib, platform; hashlib.sha256(bytes(20_000_000)).hexdigest(); "
                   "print(platform.machine())'").stdout
    print(f"sha256 of 20 MB in emulated python3: {time.monotonic() - start:.1f}s")
    assert out.strip() == "aarch64"


@pytest.mark.xfail(strict=True, reason="issue 27 open: under qemu-user the gate's unit stops at status=217/USER "
                   "(docs/aarch64-standin.md); the pack is refused and current does not move, as designed")
def test_cross_build_is_installed_by_the_pack_step_and_gated_on_the_standin(arm):
    sb, cli = arm["sb"], arm["cli"]
    start = time.monotonic()
    res = cli("build", sb.name, "--cross", "--cpu", "--llama-src", arm["src"], "--json")
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(res.stdout)
    print(f"cross build + pack + install + gate: {time.monotonic() - start:.0f}s")
    (step,) = out["steps"]
    assert step["step"] == "llama-install-pack" and step["status"] == "changed"
    assert (arm["home"] / "cache" / "builds" / f"{out['id']}.tar.gz").is_file()
    stamp = json.loads(_ssh(sb, "cat /opt/edgekit/llama.cpp/current/build-stamp.json").stdout)
    assert stamp["arch"] == "aarch64" and stamp["cpu_level"] == ORIN_LEVEL and stamp["cross"]["host"] == "x86_64"
    assert f"-DGGML_CPU_ARM_ARCH={ORIN_LEVEL}" in stamp["flags"] and "-DGGML_NATIVE=OFF" in stamp["flags"]
    # the installed llama-server is an aarch64 ELF (e_machine 183), and it passed the gate here
    machine = _ssh(sb, "od -An -tu2 -j18 -N2 /opt/edgekit/llama.cpp/current/bin/llama-server").stdout.split()
    assert machine == ["183"]
    gate = json.loads(_ssh(sb, "sudo cat /opt/edgekit/llama.cpp/current/gate.json").stdout)
    assert gate["ok"] is True and gate["tokens"] > 0, gate


@pytest.mark.xfail(run=False, reason="issue 27 open: needs the cross-built pack installed (the test above); without "
                   "it provision would compile llama.cpp under emulation on the stand-in, hours on 2 cores")
def test_provision_serves_and_answers_and_a_second_run_changes_nothing(arm):
    sb, cli = arm["sb"], arm["cli"]
    start = time.monotonic()
    first = cli(*arm["provision"])
    assert first.returncode == 0, first.stderr[-4000:]
    steps = {s["step"]: s for s in json.loads(first.stdout)["steps"]}
    assert "llama-compile" in steps and steps["llama-compile"]["status"] == "ok"     # the cross-built pack serves
    assert steps["health"]["status"] == "ok"
    print(f"provision: {time.monotonic() - start:.0f}s")
    # what of the unit's sandbox applies under emulation: the kernel's view of the (qemu) process
    seccomp = _ssh(sb, "pid=$(systemctl show -p MainPID --value edgekit-llama-server); "
                       "sudo grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/$pid/status", check=False).stdout
    print(f"the service's process under emulation: {' '.join(seccomp.split())}")
    state = json.loads((arm["home"] / "targets" / f"{sb.name}.json").read_text())
    with urllib.request.urlopen(f"{state['url']}/health", timeout=30) as resp:
        assert resp.status == 200
    start = time.monotonic()
    ask = cli("ask", sb.name, "What is the capital of France?", "--max-tokens", "16", "--temp", "0")
    assert ask.returncode == 0, ask.stderr[-2000:]
    assert len(ask.stdout.split()) >= 2, ask.stdout
    print(f"ask under emulation: {time.monotonic() - start:.0f}s: {ask.stdout.strip()!r}")
    again = cli(*arm["provision"])
    assert again.returncode == 0, again.stderr[-4000:]
    assert json.loads(again.stdout)["changed"] == 0, [s for s in json.loads(again.stdout)["steps"]
                                                      if s["status"] != "ok"]


def _x86_pack(tmp_path, name: str) -> tuple:
    """A pack that records x86_64, whose llama-server is a real x86_64 program: this controller's static
    qemu-aarch64 (it prints its version and exits 0, wherever an x86_64 kernel runs it)."""
    real = shutil.which("qemu-aarch64-static")
    tarball = tmp_path / f"{name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for d in (name, f"{name}/bin", f"{name}/lib"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(real, f"{name}/bin/llama-server")
        stamp = {"version": "b11312", "flags_hash": name.split("-")[1], "backend": "cpu", "arch": "x86_64",
                 "cpu_level": "x86-64-v2", "cpu_requires": ["sse4_2"]}
        data = json.dumps(stamp).encode()
        info = tarfile.TarInfo(f"{name}/build-stamp.json")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    tarball.with_name(f"{name}.json").write_text(json.dumps({"name": name, "sha256": sha, "stamp": stamp}))
    return tarball, real


def test_an_x86_64_pack_is_refused_before_anything_changes(arm, tmp_path):
    from edgekit.errors import UnsuitableDevice
    from edgekit.llamacpp.packs import InstallPack
    from edgekit.remote.plan import Context, run_steps
    from edgekit.remote.target import parse_target
    from edgekit.remote.transport import Transport

    sb, name = arm["sb"], "b11312-86860001"
    tarball, real = _x86_pack(tmp_path, name)
    with Transport(parse_target(sb.name)) as t:
        # the gate alone would not tell: an x86_64 program runs in the aarch64 stand-in (the host kernel runs it)
        t.put(real, "/tmp/x86-program", mode="0755")
        ran = t.run("/tmp/x86-program --version && uname -m", check=False)
        assert ran.ok and "qemu-aarch64 version" in ran.stdout and ran.stdout.split()[-1] == "aarch64", ran
        before = t.run("readlink /opt/edgekit/llama.cpp/current; ls /opt/edgekit/llama.cpp; "
                       "ls /var/cache/edgekit/packs 2>/dev/null", check=False).stdout
        with pytest.raises(UnsuitableDevice, match=f"the packed build {name} is for x86_64 and t-arm is aarch64: "
                                                   "refused before anything changed"):
            run_steps(Context(t), [InstallPack(tarball)])
        after = t.run("readlink /opt/edgekit/llama.cpp/current; ls /opt/edgekit/llama.cpp; "
                      "ls /var/cache/edgekit/packs 2>/dev/null", check=False).stdout
        t.run("rm -f /tmp/x86-program", check=False)
    assert after == before and name not in after
