"""`edgekit provision --dry-run` changes nothing anywhere: the controller's state folder (EDGEKIT_HOME) and the
device's trees edgekit writes (/etc/edgekit, /opt/edgekit, /var/lib/edgekit, /run/edgekit, /tmp, the device
helper's folder, the units) are byte-identical before and after, on a provisioned stand-in and on a fresh one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from tests.served import cli_in

pytestmark = pytest.mark.e2e

DEVICE_TREES = ("/etc/edgekit", "/opt/edgekit", "/var/lib/edgekit", "/var/lib/edgekit-llama-server", "/run/edgekit",
                "/tmp", "/var/tmp", "/etc/systemd/system")
# every entry: path, type, mode, owner, size, mtime (a file made and removed again changes its folder's mtime),
# and the sha256 of every regular file
SNAPSHOT = ("for d in {trees} \"$(getent passwd \"$SUDO_USER\" | cut -d: -f6)/.cache\"; do [ -e \"$d\" ] || continue; "
            "find \"$d\" -xdev -printf '%p %y %m %u:%g %s %T@ %l\\n'; "
            "find \"$d\" -xdev -type f -exec sha256sum {{}} +; done 2>/dev/null | LC_ALL=C sort")


def device_snapshot(target: str) -> str:
    with Transport(parse_target(target)) as t:
        return t.sudo(SNAPSHOT.format(trees=" ".join(DEVICE_TREES))).stdout


def controller_snapshot(home: Path) -> list[tuple]:
    out = []
    for root, dirs, files in os.walk(home):
        for name in sorted(dirs + files):
            p = Path(root) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
            out.append((str(p.relative_to(home)), st.st_mode, st.st_size, st.st_mtime_ns, digest))
    out.append((".", home.stat().st_mtime_ns))
    return sorted(out, key=str)


def assert_unchanged(before: str, after: str) -> None:
    if before != after:
        b, a = set(before.splitlines()), set(after.splitlines())
        raise AssertionError("the dry run changed the device:\n- " + "\n- ".join(sorted(b - a)[:40]) +
                             "\n+ " + "\n+ ".join(sorted(a - b)[:40]))


def test_dry_run_on_a_provisioned_device_changes_nothing_anywhere(served_standin):
    args = served_standin.provision_args("--dry-run", "--ctx", "1024", "--port", "8080")
    device, controller = device_snapshot(served_standin.target), controller_snapshot(served_standin.home)
    res = served_standin.cli(*args)
    assert res.returncode == 0, res.stderr
    assert "would-change" in res.stderr and "nothing was changed" in res.stderr    # a change was planned, not made
    assert "<" not in "".join(line for line in res.stderr.splitlines() if "python3" in line)
    assert_unchanged(device, device_snapshot(served_standin.target))
    assert controller_snapshot(served_standin.home) == controller


def test_dry_run_on_a_fresh_device_changes_nothing_anywhere(standin_factory, model_server, gemma_gguf, llama_src,
                                                            tmp_path, session_dir):
    from tests.served import GEMMA_FILE, GEMMA_REPO

    sb = standin_factory("t-dry")
    model_server.add(GEMMA_REPO, GEMMA_FILE, gemma_gguf)
    home = tmp_path / "home"
    home.mkdir()
    cli = cli_in(home, session_dir)
    args = ["provision", sb.name, "--model", "gemma3-270m", "--llama-src", str(llama_src), "--cpu", "--hf-endpoint",
            model_server.endpoint(sb.host_address), "--fetch-on", "device", "--allow-unpinned", "--dry-run"]
    device, controller = device_snapshot(sb.name), controller_snapshot(home)
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert "dry run:" in res.stderr and "would change" in res.stderr, res.stderr
    assert_unchanged(device, device_snapshot(sb.name))
    assert controller_snapshot(home) == controller
