"""The controller's per-target state: targets/ is 0700, its files 0600 whatever was left there, written atomically
through a fresh temp file."""

from __future__ import annotations

import os
import stat

import pytest

from edgekit import state


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def open_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_leftover_world_readable_temp_does_not_leak_the_key(edgekit_home):
    targets = edgekit_home / "targets"
    targets.mkdir(mode=0o755)
    for name in ("orin.api-key", "orin.tmp"):           # what older edgekit wrote through, left by a killed run
        (targets / name).write_text("old\n")
        (targets / name).chmod(0o644)
    path = state.save_api_key("orin", "sk-secret")
    assert path.read_text() == "sk-secret\n" and _mode(path) == 0o600
    assert _mode(targets) == 0o700
    assert (targets / "orin.tmp").read_text() == "old\n"   # never written to
    assert state.read_api_key("orin") == "sk-secret"


def test_a_temp_name_that_is_a_symlink_is_not_followed(edgekit_home, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    targets = edgekit_home / "targets"
    targets.mkdir()
    (targets / "orin.tmp").symlink_to(victim)
    state.save_api_key("orin", "sk-secret")
    state.save("orin", {"url": "http://orin:8080"})
    assert victim.read_text() == "untouched"
    assert not (targets / "orin.api-key").is_symlink() and _mode(targets / "orin.api-key") == 0o600


def test_state_file_is_0600_and_round_trips(edgekit_home):
    path = state.save("jetson@10.0.0.5:2222", {"url": "http://10.0.0.5:8080", "port": 8080})
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert state.load("jetson@10.0.0.5:2222") == {"target": "jetson@10.0.0.5:2222", "url": "http://10.0.0.5:8080",
                                                  "port": 8080}
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    state.forget("jetson@10.0.0.5:2222")
    assert state.load("jetson@10.0.0.5:2222") is None


def test_a_key_saved_world_readable_by_an_older_edgekit_is_tightened_when_read(edgekit_home):
    path = state.api_key_path("orin")
    path.parent.mkdir(parents=True)               # an older edgekit made the folder (asking makes nothing)
    path.write_text("sk-old\n")
    path.chmod(0o644)
    assert state.read_api_key("orin") == "sk-old" and _mode(path) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temp(edgekit_home, monkeypatch):
    state.save_api_key("orin", "sk-1")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        state.save_api_key("orin", "sk-2")
    assert state.read_api_key("orin") == "sk-1"
    assert sorted(p.name for p in state.targets_dir().iterdir()) == ["orin.api-key"]
