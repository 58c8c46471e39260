"""edgekit.lock: the sha256 of a model (or llama.cpp source) is recorded the first time and every later install must
match it: the API on its own, concurrent writers, and the model install path wired to it."""

from __future__ import annotations

import copy

import hashlib
import json
import multiprocessing
import subprocess
import threading
from pathlib import Path

import pytest

from edgekit import lockfile
from edgekit.errors import UsageError
from edgekit.models import steps
from edgekit.models.tiny import tiny_llama_bytes
from edgekit.remote.plan import run_steps
from tests.test_models import local_device

A, B = "a" * 64, "b" * 64


def test_first_record_then_match(edgekit_home):
    lockfile.check_or_record("model", "m/m.gguf", A.upper(), "https://hf.co/x/resolve/main/m.gguf?token=secret")
    path = edgekit_home / "edgekit.lock"
    assert lockfile.location() == path == lockfile.default_path()
    data = json.loads(path.read_text())
    assert data["version"] == 1
    entry = data["model"]["m/m.gguf"]
    assert entry["sha256"] == A and entry["source"] == "https://hf.co/x/resolve/main/m.gguf"   # no query string
    assert entry["recorded"].endswith("+00:00")
    before = path.stat().st_mtime_ns
    lockfile.check_or_record("model", "m/m.gguf", A, "https://mirror.example/m.gguf")            # another source
    lockfile.check("model", "m/m.gguf", A)
    assert path.stat().st_mtime_ns == before and lockfile.recorded("model", "m/m.gguf") == A
    assert not list(path.parent.glob(".edgekit.lock.*"))                                         # no temp files


def test_mismatch_names_both_hashes_and_the_lock_file(tmp_path):
    lock = tmp_path / "fleet" / "edgekit.lock"
    lockfile.check_or_record("llama.cpp", "b4000", A, "https://github.com/ggml-org/llama.cpp", lock)
    for call in (lambda: lockfile.check_or_record("llama.cpp", "b4000", B, "elsewhere", lock),
                 lambda: lockfile.check("llama.cpp", "b4000", B, lock)):
        with pytest.raises(lockfile.LockMismatch) as info:
            call()
        e = info.value
        assert e.exit_code == 4 and A in e.message and B in e.message and str(lock) in e.message
        assert "github.com/ggml-org/llama.cpp" in e.message and str(lock) in e.hint and '"b4000"' in e.hint
    assert json.loads(lock.read_text())["llama.cpp"]["b4000"]["sha256"] == A


def test_check_alone_never_writes(tmp_path):
    lock = tmp_path / "edgekit.lock"
    lockfile.check("model", "m/m.gguf", A, lock)
    assert lockfile.recorded("model", "m/m.gguf", lock) is None and not lock.exists()


def test_kinds_and_names_are_separate(tmp_path):
    lock = tmp_path / "edgekit.lock"
    lockfile.check_or_record("model", "x", A, "s", lock)
    lockfile.check_or_record("model", "y", B, "s", lock)
    lockfile.check_or_record("llama.cpp", "x", B, "s", lock)
    data = json.loads(lock.read_text())
    assert {k: {n: e["sha256"] for n, e in v.items()} for k, v in data.items() if k != "version"} == \
        {"model": {"x": A, "y": B}, "llama.cpp": {"x": B}}


def test_for_inventory(tmp_path):
    inv = tmp_path / "site" / "edgekit.toml"
    assert lockfile.for_inventory(inv) == tmp_path / "site" / "edgekit.lock"


@pytest.mark.parametrize("text, match", [("{not json", "not valid JSON"), ("[1, 2]", "not an edgekit lock file"),
                                         ('{"version": 9}', "version 9"),
                                         ('{"model": {"x": {"sha256": "nope"}}}', "malformed entry")])
def test_a_broken_lock_file_is_refused(tmp_path, text, match):
    lock = tmp_path / "edgekit.lock"
    lock.write_text(text)
    with pytest.raises(UsageError, match=match) as info:
        lockfile.check_or_record("model", "x", A, "s", lock)
    assert info.value.exit_code == 2 and str(lock) in info.value.message
    assert lock.read_text() == text


def test_bad_arguments_are_bugs(tmp_path):
    with pytest.raises(ValueError):
        lockfile.check_or_record("model", "x", "abc", "s", tmp_path / "l")
    with pytest.raises(ValueError):
        lockfile.check_or_record("version", "x", A, "s", tmp_path / "l")


def _record(args):
    lock, kind, name, sha = args
    try:
        lockfile.check_or_record(kind, name, sha, f"proc-{name}-{sha[:4]}", lock)
        return "recorded"
    except lockfile.LockMismatch:
        return "refused"


def test_concurrent_writers_in_processes_lose_no_entry(tmp_path):
    lock = str(tmp_path / "edgekit.lock")
    jobs = [(lock, "model", f"m{i}/f.gguf", hashlib.sha256(str(i).encode()).hexdigest()) for i in range(24)]
    with multiprocessing.get_context("fork").Pool(6) as pool:
        assert pool.map(_record, jobs) == ["recorded"] * 24
    data = json.loads(Path(lock).read_text())
    assert {n: e["sha256"] for n, e in data["model"].items()} == {name: sha for _, _, name, sha in jobs}
    assert not list(tmp_path.glob(".edgekit.lock.*"))


def test_concurrent_first_fetches_of_one_name_agree_on_one_hash(tmp_path):
    """Two hosts fetch the same model at once and get different bytes: one is recorded, every other is refused."""
    lock = str(tmp_path / "edgekit.lock")
    shas = [A, B] * 6
    with multiprocessing.get_context("fork").Pool(6) as pool:
        outcome = pool.map(_record, [(lock, "model", "same/f.gguf", s) for s in shas])
    winner = json.loads(Path(lock).read_text())["model"]["same/f.gguf"]["sha256"]
    assert winner in (A, B)
    assert all((o == "recorded") == (s == winner) for o, s in zip(outcome, shas))


def test_concurrent_writers_in_threads(tmp_path):
    lock = tmp_path / "edgekit.lock"
    errors = []

    def work(i):
        try:
            lockfile.check_or_record("model", f"t{i}", hashlib.sha256(bytes([i])).hexdigest(), "s", lock)
        except Exception as e:                  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(json.loads(lock.read_text())["model"]) == 16


# -- wired into the model install path --------------------------------------------------------------------------

GOOD = tiny_llama_bytes()
OTHER = tiny_llama_bytes(seed=1)          # a valid GGUF with other bytes (another upload under the same name)


def _request(src: Path, lock: Path, **kw) -> steps.ModelRequest:
    return steps.ModelRequest("tiny-locked", source_url=str(src), fetch_on="controller", lock_file=str(lock), **kw)


def test_install_records_then_refuses_other_bytes_on_another_device(tmp_path, monkeypatch):
    lock = tmp_path / "site" / "edgekit.lock"
    src = tmp_path / "tiny.gguf"
    src.write_bytes(GOOD)
    ctx, models = local_device(tmp_path / "dev1", monkeypatch)
    dry = run_steps(type(ctx)(ctx.transport, dry_run=True, run=copy.copy(ctx.run)),
                    steps.model_steps(_request(src, lock, allow_unpinned=True)))
    assert dry[1].status == "would-change" and any(str(lock) in c for c in dry[1].commands) and not lock.exists()
    run_steps(ctx, steps.model_steps(_request(src, lock, allow_unpinned=True)))
    good_sha = hashlib.sha256(GOOD).hexdigest()
    assert lockfile.recorded("model", "tiny-locked/tiny.gguf", lock) == good_sha

    # the same name now serves other bytes; a second device, a fresh controller cache
    src.write_bytes(OTHER)
    steps.download.cache_path("tiny-locked", "tiny.gguf").unlink()
    ctx2, models2 = local_device(tmp_path / "dev2", monkeypatch)
    with pytest.raises(lockfile.LockMismatch) as info:
        run_steps(ctx2, steps.model_steps(_request(src, lock, allow_unpinned=True)))
    e = info.value
    assert e.exit_code == 4 and good_sha in e.message and hashlib.sha256(OTHER).hexdigest() in e.message
    assert str(lock) in e.message and not (models2 / "tiny-locked" / "tiny.gguf").exists()

    # an explicit --sha256 that disagrees with the lock is refused before anything changes
    with pytest.raises(lockfile.LockMismatch):
        run_steps(ctx2, steps.model_steps(_request(src, lock, sha256=hashlib.sha256(OTHER).hexdigest())))
    assert not (models2 / "tiny-locked").exists()


def test_a_file_already_on_a_device_is_verified_against_the_lock(tmp_path, monkeypatch):
    lock = tmp_path / "edgekit.lock"
    src = tmp_path / "tiny.gguf"
    src.write_bytes(GOOD)
    ctx, models = local_device(tmp_path / "dev", monkeypatch)
    (models / "tiny-locked").mkdir(parents=True)
    (models / "tiny-locked" / "tiny.gguf").write_bytes(OTHER)          # put there by hand, or an older run
    lockfile.check_or_record("model", "tiny-locked/tiny.gguf", hashlib.sha256(GOOD).hexdigest(), "first", lock)
    results = run_steps(ctx, steps.model_steps(_request(src, lock, allow_unpinned=True)))
    assert results[1].status == "changed" and "replace mismatching file" in results[1].message
    assert (models / "tiny-locked" / "tiny.gguf").read_bytes() == GOOD    # the locked bytes, from the source
    assert run_steps(ctx, steps.model_steps(_request(src, lock, allow_unpinned=True)))[1].status == "ok"


@pytest.mark.e2e
def test_e2e_lock_file_refuses_other_bytes_on_a_second_device(standin_factory, model_server, tmp_path):
    """Two stand-ins, one controller (one EDGEKIT_HOME): the first pull records, the second gets other bytes."""
    from tests.conftest import run_cli

    a, b = standin_factory("t-models"), standin_factory("t-models2")
    home = tmp_path / "home"
    src = tmp_path / "tiny-lock.gguf"
    src.write_bytes(GOOD)
    served = model_server.add("acme/tiny-lock", "tiny-lock.gguf", src)

    def pull(sb):
        return run_cli("models", "pull", "tiny-lock-e2e", "--target", sb.name, "--allow-unpinned", "--url",
                       model_server.endpoint(sb.host_address) + served.url_path, "--fetch-on", "device",
                       env={"EDGEKIT_HOME": str(home)})

    r = pull(a)
    assert r.returncode == 0, r.stderr
    lock = home / "edgekit.lock"
    assert json.loads(lock.read_text())["model"]["tiny-lock-e2e/tiny-lock.gguf"]["sha256"] == served.sha256
    other = tmp_path / "other.gguf"
    other.write_bytes(OTHER)
    model_server.add("acme/tiny-lock", "tiny-lock.gguf", other)          # same URL, other bytes
    r = pull(b)
    assert r.returncode == 4 and str(lock) in r.stderr and served.sha256 in r.stderr, r.stderr
    out = subprocess.run(["ssh", "-F", str(b.ssh_config), b.name,
                          "ls -A /opt/edgekit/models/tiny-lock-e2e 2>/dev/null; true"], capture_output=True, text=True)
    assert out.stdout.strip() == ""
