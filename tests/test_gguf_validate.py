"""A GGUF is checked before it is installed: pure checks on crafted files, the helper's check the device runs, and
the model steps on this machine as the device (controller path and device path)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.device.events import parse_event
from edgekit.errors import REMOTE
from edgekit.models import gguf_header, steps
from edgekit.models.gguf_header import GGUFError, check, check_file, read_header
from edgekit.models.tiny import _ARR, _F32, _I32, _STR, _U32, _kv, _s, tiny_llama_bytes
from edgekit.remote import helper
from edgekit.remote.plan import Change, run_steps
from tests.test_models import local_device, write_gguf_with_template

GOOD = tiny_llama_bytes()


def _gguf(tensors=(("a.weight", (64, 2), 0, 0), ("b.weight", (64,), 0, 512)), data: bytes | None = None,
          kvs: list[bytes] | None = None, version: int = 3, n_tensors: int | None = None,
          n_kv: int | None = None, magic: bytes = b"GGUF") -> bytes:
    """A small GGUF with the given tensor infos (name, dims, ggml type, offset) and data, aligned to 32."""
    kvs = kvs if kvs is not None else [_kv("general.architecture", _STR, "llama")]
    infos = b"".join(_s(n) + struct.pack("<I", len(d)) + struct.pack(f"<{len(d)}q", *d) + struct.pack("<IQ", t, o)
                     for n, d, t, o in tensors)
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + infos
    head += b"\0" * ((-len(head)) % 32)
    return head + (data if data is not None else b"\1" * (512 + 256))


def _check(blob: bytes):
    return check(io.BytesIO(blob), len(blob))


def test_good_files_pass():
    h = _check(GOOD)
    assert (h.architecture, h.tensor_count, h.file_size, h.alignment) == ("llama", 20, len(GOOD), 32)
    assert h.data_offset % 32 == 0 and h.header_bytes < h.data_offset < len(GOOD)
    assert _check(_gguf()).tensor_count == 2


def test_a_gguf_written_by_the_gguf_package_passes(tmp_path):
    path = write_gguf_with_template(tmp_path / "m.gguf")
    h = check_file(path)
    assert h.chat_template is True and h.file_size == path.stat().st_size


@pytest.mark.parametrize("cut", [3, 20, 2000, 9000, len(GOOD) - 1])
def test_truncated_file_is_refused(cut):
    assert cut < len(GOOD)
    with pytest.raises(GGUFError, match="truncated"):
        _check(GOOD[:cut])


def test_truncated_only_in_the_tensor_data_passes_the_header_reader_but_not_the_check():
    cut = GOOD[:len(GOOD) - 4096]
    assert read_header(io.BytesIO(cut)).tensor_count == 20          # the fit reader does not look that far
    with pytest.raises(GGUFError, match=r"tensor 'blk\.1\.ffn_down\.weight' .* past the end of the file"):
        _check(cut)


@pytest.mark.parametrize("magic", [b"GGML", b"\x7fELF", b"PK\x03\x04", b"<htm"])
def test_wrong_magic(magic):
    with pytest.raises(GGUFError, match="not a GGUF file"):
        _check(magic + GOOD[4:])


def test_tensor_beyond_eof():
    blob = _gguf(tensors=[("a.weight", (64, 2), 0, 0), ("b.weight", (64,), 0, 1 << 40)])
    with pytest.raises(GGUFError, match=r"tensor 'b\.weight' \(256 bytes at offset \d+\) ends at byte \d+, past the "
                                        r"end of the file"):
        _check(blob)
    huge = _gguf(tensors=[("a.weight", (64, 1 << 40), 0, 0)])       # 256 TiB in a 1 KiB file
    with pytest.raises(GGUFError, match="past the end of the file"):
        _check(huge)


@pytest.mark.parametrize("blob, match", [
    (_gguf(version=1), "unsupported GGUF version 1"),
    (_gguf(version=4), "unsupported GGUF version 4"),
    (_gguf(n_kv=1 << 40), "metadata entries"),
    (_gguf(n_kv=5000), "metadata entries"),                          # more than a 1 KiB file can hold
    (_gguf(n_tensors=1 << 40), "tensors"),
    (_gguf(tensors=[]), "no tensors"),
    (_gguf(kvs=[_kv("general.architecture", _STR, "llama"), _kv("general.architecture", _STR, "x")]),
     "duplicate key"),
    (_gguf(kvs=[_s("k") + struct.pack("<IIQ", _ARR, _I32, 1 << 50)]), "needs"),         # array past EOF
    (_gguf(kvs=[_s("k") + struct.pack("<IIQ", _ARR, _STR, 1 << 50)]), "needs"),
    (_gguf(kvs=[_s("k") + struct.pack("<IIQ", _ARR, _ARR, 1)]), "array of arrays"),
    (_gguf(kvs=[_s("k") + struct.pack("<I", 13)]), "unknown value type 13"),
    (_gguf(kvs=[_s("k") + struct.pack("<Q", 1 << 40)]), "string of"),
    (_gguf(kvs=[_kv("general.alignment", _U32, 24)]), "general.alignment"),
    (_gguf(kvs=[_kv("general.alignment", _F32, 32.0)]), "general.alignment"),
    (_gguf(tensors=[("a", (64,), 0, 0), ("a", (64,), 0, 256)]), "duplicate tensor"),
    (_gguf(tensors=[("x" * 64, (64,), 0, 0)]), "name of 64"),
    (_gguf(tensors=[("a", (1, 1, 1, 1, 1), 0, 0)]), "5 dimensions"),
    (_gguf(tensors=[("a", (64, -1), 0, 0)]), "negative dimension"),
    (_gguf(tensors=[("a", (1 << 62, 1 << 62), 0, 0)]), "too many elements"),
    (_gguf(tensors=[("a", (64,), 4, 0)]), "ggml type 4"),             # removed from ggml
    (_gguf(tensors=[("a", (64,), 99, 0)]), "ggml type 99"),
    (_gguf(tensors=[("a", (48,), 2, 0)]), "not whole blocks of 32"),  # q4_0 rows of 48
    (_gguf(tensors=[("a", (64,), 0, 0), ("b", (64,), 0, 260)]), "not aligned"),
])
def test_corrupt_headers_are_refused(blob, match):
    with pytest.raises(GGUFError, match=match):
        _check(blob)


def test_check_reads_no_tensor_data():
    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            data = super().read(n)
            Counting.read_bytes += len(data)
            return data

    blob = _gguf(data=b"\0" * (50 << 20))
    _check(blob)
    fh = Counting(blob)
    check(fh, len(blob))
    assert Counting.read_bytes < 4096


def test_check_file_errors_are_typed(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(GOOD[:100])
    with pytest.raises(GGUFError):
        check_file(bad)
    with pytest.raises(Exception, match="cannot read"):
        check_file(tmp_path / "missing.gguf")


# -- on the device: the helper's `gguf`, stdlib only ----------------------------------------------------------

def _interpreters() -> list[str]:
    found = [sys.executable]
    for name in ("python3.8", "python3.9"):       # JetPack 5 ships Python 3.8
        path = shutil.which(name)
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
            found.append(path)
    return found


@pytest.mark.parametrize("python", _interpreters())
def test_the_device_check_runs_with_the_standard_library_alone(python, tmp_path):
    pyz = tmp_path / "isolated" / "helper.pyz"
    pyz.parent.mkdir()
    pyz.write_bytes(helper.build())
    good, bad = tmp_path / "good.gguf", tmp_path / "bad.gguf"
    good.write_bytes(GOOD)
    bad.write_bytes(GOOD[:-100])

    def run(path):
        # -I -S: no site-packages, no PYTHONPATH, no current directory: what a bare device has
        p = subprocess.run([python, "-I", "-S", str(pyz), "gguf", str(path)], capture_output=True, text=True,
                           cwd=pyz.parent)
        events = [e for e in map(parse_event, p.stdout.splitlines()) if e is not None]
        return p.returncode, events[-1], p.stderr

    rc, event, err = run(good)
    assert rc == 0 and event["event"] == "gguf" and event["tensor_count"] == 20, err
    assert gguf_header.GGUFHeader.from_json(event).file_size == len(GOOD)
    rc, event, _ = run(bad)
    assert rc == 3 and event == {"event": "error", "kind": "gguf", "message": event["message"]}
    assert "past the end of the file" in event["message"]
    assert run(tmp_path / "nope.gguf")[:2] == (0, {"event": "missing", "path": str(tmp_path / "nope.gguf")})


# -- the model steps refuse an invalid file, on both paths, and leave nothing behind ----------------------------

def _sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def test_controller_path_refuses_a_truncated_file_before_upload(tmp_path, monkeypatch):
    ctx, models = local_device(tmp_path, monkeypatch)
    cut = GOOD[:len(GOOD) - 4096]
    src = tmp_path / "cut.gguf"
    src.write_bytes(cut)
    request = steps.ModelRequest("cut", source_url=str(src), sha256=_sha(cut), fetch_on="controller")
    with pytest.raises(steps.InvalidModelFile) as info:
        run_steps(ctx, steps.model_steps(request))
    e = info.value
    assert e.exit_code == REMOTE == 4
    assert "is not a valid GGUF model" in e.message and "past the end of the file" in e.message
    assert "nothing was installed" in e.message and e.hint
    assert not models.exists() or not any(models.rglob("*"))                # the device was not touched
    cached = steps.download.cache_path("cut", "cut.gguf")
    assert not cached.exists() and not Path(str(cached) + ".sha256").exists()  # the bad copy is gone
    assert src.read_bytes() == cut                                            # the user's own file is left alone


def test_catalog_model_from_a_foreign_file_is_refused(tmp_path, monkeypatch):
    """A catalog name with --url and --sha256 of a file that is not a GGUF: the same check, the same refusal."""
    ctx, models = local_device(tmp_path, monkeypatch)
    src = tmp_path / "page.html"
    src.write_bytes(b"<html><body>Sign in to continue</body></html>" * 100)
    request = steps.ModelRequest("chinese-alpaca-2-1.3b:q4_k", source_url=str(src), sha256=_sha(src.read_bytes()),
                                 fetch_on="controller")
    with pytest.raises(steps.InvalidModelFile, match="not a GGUF file"):
        run_steps(ctx, steps.model_steps(request))
    assert not models.exists() or not any(models.rglob("*"))


def test_device_path_refuses_and_removes_the_download(tmp_path, monkeypatch, model_server):
    ctx, models = local_device(tmp_path, monkeypatch)
    cut = GOOD[:len(GOOD) - 4096]
    src = tmp_path / "cut-device.gguf"
    src.write_bytes(cut)
    served = model_server.add("acme/cut", "cut-device.gguf", src)
    request = steps.ModelRequest("cut-device", source_url=model_server.endpoint() + served.url_path,
                                 sha256=served.sha256, fetch_on="device")
    with pytest.raises(steps.InvalidModelFile, match="past the end of the file") as info:
        run_steps(ctx, steps.model_steps(request))
    assert info.value.exit_code == 4 and "fetched to" in info.value.message
    folder = models / "cut-device"
    assert sorted(p.name for p in folder.iterdir()) == []                    # no file, no partial, no sidecar


def test_good_file_installs_on_both_paths_and_the_rerun_changes_nothing(tmp_path, monkeypatch, model_server):
    ctx, models = local_device(tmp_path, monkeypatch)
    src = tmp_path / "tiny-good.gguf"
    src.write_bytes(GOOD)
    served = model_server.add("acme/tiny", "tiny-good.gguf", src)
    for mode, url in (("controller", str(src)), ("device", model_server.endpoint() + served.url_path)):
        name = f"tiny-{mode}"
        request = steps.ModelRequest(name, source_url=url, sha256=_sha(GOOD), fetch_on=mode)
        results = run_steps(ctx, steps.model_steps(request))
        assert [r.status for r in results] == ["ok", "changed"], results
        assert (models / name / "tiny-good.gguf").read_bytes() == GOOD
        again = run_steps(ctx, steps.model_steps(request))
        assert [r.status for r in again] == ["ok", "ok"] and "a valid GGUF" in again[1].message


def test_a_present_file_that_is_not_a_gguf_is_replaced(tmp_path, monkeypatch):
    """Unpinned (--allow-unpinned): any file at the model's place counts as 'verified' by hash; the check does not."""
    ctx, models = local_device(tmp_path, monkeypatch)
    src = tmp_path / "tiny-swap.gguf"
    src.write_bytes(GOOD)
    request = steps.ModelRequest("tiny-swap", source_url=str(src), allow_unpinned=True, fetch_on="controller",
                                 lock_file=str(tmp_path / "edgekit.lock"))
    (models / "tiny-swap").mkdir(parents=True)
    (models / "tiny-swap" / "tiny-swap.gguf").write_bytes(b"not a model at all")
    plan = steps.FetchModel(request).plan(ctx)
    assert isinstance(plan, Change) and "not a valid GGUF" in plan.summary
    run_steps(ctx, steps.model_steps(request))
    assert (models / "tiny-swap" / "tiny-swap.gguf").read_bytes() == GOOD


# -- end to end on a stand-in device (pytest -m e2e) ------------------------------------------------------------

def _ls_models(sb, name: str) -> str:
    command = f"ls -A /opt/edgekit/models/{name} 2>/dev/null; true"
    out = subprocess.run(["ssh", "-F", str(sb.ssh_config), sb.name, command], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


@pytest.mark.e2e
def test_e2e_truncated_gguf_is_refused_on_both_paths(standin_factory, model_server, tmp_path):
    from tests.conftest import run_cli

    sb = standin_factory("t-models")
    src = tmp_path / "tiny-cut.gguf"
    src.write_bytes(GOOD[:len(GOOD) - 4096])
    served = model_server.add("acme/tiny-cut", "tiny-cut.gguf", src)
    for mode, host in (("device", sb.host_address), ("controller", "127.0.0.1")):
        r = run_cli("models", "pull", "tiny-cut", "--target", sb.name, "--url",
                    model_server.endpoint(host) + served.url_path, "--sha256", served.sha256, "--fetch-on", mode,
                    env={"EDGEKIT_SSH_CONFIG": str(sb.ssh_config)})
        assert r.returncode == 4, (mode, r.stderr)
        assert "is not a valid GGUF model" in r.stderr and "past the end of the file" in r.stderr
        assert _ls_models(sb, "tiny-cut") == ""                    # no model, no partial, no sidecar


@pytest.mark.e2e
def test_e2e_url_model_pulls_by_its_file_name_and_reruns_as_a_noop(standin_factory, model_server, tmp_path):
    from tests.conftest import run_cli

    sb = standin_factory("t-models")
    src = tmp_path / "Tiny-Chat-F32.gguf"
    src.write_bytes(GOOD)
    served = model_server.add("acme/tiny-chat", "Tiny-Chat-F32.gguf", src)
    args = ("models", "pull", "tiny-chat-e2e", "--target", sb.name, "--url",
            model_server.endpoint(sb.host_address) + served.url_path, "--sha256", served.sha256, "--fetch-on",
            "device", "--json")
    first = run_cli(*args, env={"EDGEKIT_SSH_CONFIG": str(sb.ssh_config)})
    assert first.returncode == 0, first.stderr
    model = json.loads(first.stdout)["model"]
    assert model["path"] == "/opt/edgekit/models/tiny-chat-e2e/Tiny-Chat-F32.gguf"
    assert model["sha256"] == served.sha256 and model["ctx"] == 512      # the header's context_length
    again = json.loads(run_cli(*args, env={"EDGEKIT_SSH_CONFIG": str(sb.ssh_config)}).stdout)
    assert [r["status"] for r in again["results"]] == ["ok", "ok"]


@pytest.mark.needs("gguf")
def test_ggml_type_sizes_match_the_gguf_package():
    from gguf import constants
    theirs = {t.value: size for t, size in constants.GGML_QUANT_SIZES.items() if t.name != "Q8_1"}
    ours = {k: v for k, v in gguf_header.GGML_TYPES.items() if k != 9}
    assert ours == theirs
