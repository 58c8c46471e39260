"""Device-side Python under a real interpreter older than this machine's: a Debian bullseye stand-in, whose python3
is Debian's 3.9.2 (the oldest python3 the Debian mirror still has; a JetPack 5 board has 3.8, which vermin checks
in test_device_python.py). Over real SSH, the device helper is uploaded and run by edgekit's own code: telemetry
through the CLI, `gguf` and `tcp` through run_helper; the exporter zipapp runs there too. Each runs twice: on
bullseye for this machine's architecture, and on bullseye arm64 under qemu-user emulation (a Jetson's machine,
aarch64; docs/aarch64-standin.md)."""

from __future__ import annotations

import json
import platform
import sys

import pytest

from edgekit.metrics import bundle
from edgekit.models.tiny import tiny_llama_bytes
from edgekit.remote import helper
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from tests import prereqs
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e

SUITE = "bullseye"
OLD_PYTHON = (3, 9)           # Debian bullseye's python3 (3.9.2)


# (stand-in name, Debian architecture: None is this machine's, arm64 runs under qemu-user, uname -m there)
ARCHES = {"native": ("t-bullseye", None, None), "arm64": ("t-bull-arm", "arm64", "aarch64")}


@pytest.fixture(scope="module", params=list(ARCHES))
def old(request, standin_factory):
    name, arch, _ = ARCHES[request.param]
    if arch is not None:
        prereqs.require("qemu-user-static")
    sb = standin_factory(name, suite=SUITE, arch=arch)
    with Transport(parse_target(sb.name)) as t:
        yield sb, t


def test_the_device_python_is_older_than_this_machines(old, request):
    _, t = old
    machine, *version = t.run("python3 -c 'import platform, sys; print(platform.machine(), "
                              "*sys.version_info[:3])'").stdout.split()
    device = tuple(int(v) for v in version)
    assert device[:2] == OLD_PYTHON and device < sys.version_info[:3], (device, sys.version_info)
    expected = ARCHES[request.node.callspec.params["old"]][2] or platform.machine()
    assert machine == expected, (machine, expected)
    print(f"device Python {'.'.join(version)} on {machine} (Debian {SUITE})")


def test_telemetry_runs_the_helper_under_the_old_python(old):
    sb, _ = old
    out = run_cli("telemetry", sb.name, "--json", "--duration", "1.5", "--interval", "0.5", timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["kind"] == "source" and lines[0]["source"] == "procfs" and len(lines) >= 3
    assert all(0 < s["ram_used_mb"] < s["ram_total_mb"] for s in lines[1:])


def test_helper_subcommands_under_the_old_python(old, tmp_path):
    _, t = old
    (tmp_path / "t.gguf").write_bytes(tiny_llama_bytes())
    t.put(str(tmp_path / "t.gguf"), "/tmp/t.gguf")
    events, result = helper.run_helper(t, "gguf", ["/tmp/t.gguf"])
    assert result.ok, result.stderr
    assert helper.last_event(events, result, "gguf")["architecture"] == "llama"
    events, result = helper.run_helper(t, "tcp", ["127.0.0.1", "22", "5"])
    assert result.ok and events[-1]["event"] == "tcp" and events[-1]["reachable"] is True, (events, result.stderr)
    events, result = helper.run_helper(t, "tcp", ["127.0.0.1", "1", "5"])
    assert events[-1]["reachable"] is False, events


def test_the_exporter_zipapp_runs_under_the_old_python(old, tmp_path):
    _, t = old
    (tmp_path / "exporter.pyz").write_bytes(bundle.build())
    t.put(str(tmp_path / "exporter.pyz"), "/tmp/edgekit-exporter.pyz")
    res = t.run("python3 -I -S /tmp/edgekit-exporter.pyz --help", check=False)
    assert res.ok and "--token-file" in res.stdout, res.stdout + res.stderr
    # one real serve: on loopback without a token, scraped by the device's own curl until the first board sample
    # is in (the sampler starts with the server), then stopped
    res = t.run("python3 -I -S /tmp/edgekit-exporter.pyz --port 19101 --no-token --source procfs "
                "--interval 0.5 >/tmp/exporter.log 2>&1 & pid=$!; "
                "for i in $(seq 50); do out=$(curl -sf http://127.0.0.1:19101/metrics) && "
                "case \"$out\" in *edgekit_memory_total_bytes*) echo \"$out\"; break;; esac; sleep 0.2; done; "
                "kill $pid", check=False)
    assert "edgekit_memory_total_bytes" in res.stdout, res.stdout + res.stderr
