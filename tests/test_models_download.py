"""Controller downloads against a real nginx serving files the Hub's way (Range, X-Linked-Etag/Size)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.models import device_fetch, download

from tests.modelserver import GEMMA_SHA


@pytest.fixture
def small_file(tmp_path) -> Path:
    path = tmp_path / "blob.gguf"
    path.write_bytes(os.urandom(3 * 2**20 + 123))
    return path


def test_download_verifies_against_x_linked_etag(model_server, small_file, tmp_path):
    served = model_server.add("acme/small-gguf", "blob.gguf", small_file)
    url = f"{model_server.endpoint()}{served.url_path}"
    seen = []
    got = download.fetch(url, tmp_path / "out" / "blob.gguf", on_progress=seen.append)
    assert got.sha256 == served.sha256 and got.size == served.size and got.downloaded == served.size
    assert (tmp_path / "out" / "blob.gguf").read_bytes() == small_file.read_bytes()
    assert not (tmp_path / "out" / "blob.gguf.partial").exists()
    assert device_fetch.verified_sha256(str(tmp_path / "out" / "blob.gguf")) == served.sha256
    # a second fetch finds the verified file (sidecar: size+mtime) and transfers nothing
    before = model_server.bytes_sent(served.url_path)
    again = download.fetch(url, tmp_path / "out" / "blob.gguf", sha256=served.sha256)
    assert again.downloaded == 0 and model_server.bytes_sent(served.url_path) == before


def test_resume_from_partial_uses_range(model_server, small_file, tmp_path):
    served = model_server.add("acme/small-gguf", "resume.gguf", small_file)
    dest = tmp_path / "resume.gguf"
    Path(str(dest) + ".partial").write_bytes(small_file.read_bytes()[:1_000_000])
    got = download.fetch(f"{model_server.endpoint()}{served.url_path}", dest, sha256=served.sha256)
    assert got.resumed_from == 1_000_000 and got.downloaded == served.size - 1_000_000
    assert dest.read_bytes() == small_file.read_bytes()
    last = [r for r in model_server.access_log() if r["path"] == served.url_path][-1]
    assert last["status"] == 206 and last["range"] == "bytes=1000000-"


def test_corrupt_partial_is_detected_and_never_installed(model_server, small_file, tmp_path):
    served = model_server.add("acme/small-gguf", "corrupt.gguf", small_file)
    dest = tmp_path / "corrupt.gguf"
    Path(str(dest) + ".partial").write_bytes(b"\0" * 500_000)       # wrong bytes where a prefix should be
    with pytest.raises(download.ChecksumError, match="sha256 mismatch"):
        download.fetch(f"{model_server.endpoint()}{served.url_path}", dest)
    assert not dest.exists() and not Path(str(dest) + ".partial").exists()
    # and the next run starts clean and succeeds
    assert download.fetch(f"{model_server.endpoint()}{served.url_path}", dest).sha256 == served.sha256


def test_truncated_file_is_detected(model_server, small_file, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(small_file.read_bytes()[:2_000_000])
    full_sha = device_fetch.hash_file(str(small_file)).hexdigest()
    served = model_server.add("acme/small-gguf", "cut.gguf", cut, etag=full_sha, size=small_file.stat().st_size)
    dest = tmp_path / "dl" / "cut.gguf"
    with pytest.raises(download.ChecksumError, match="expected"):
        download.fetch(f"{model_server.endpoint()}{served.url_path}", dest)
    assert not dest.exists()


def test_wrong_catalog_hash_is_a_clear_error(model_server, small_file, tmp_path):
    served = model_server.add("acme/small-gguf", "wrong.gguf", small_file)
    with pytest.raises(download.ChecksumError) as info:
        download.fetch(f"{model_server.endpoint()}{served.url_path}", tmp_path / "w.gguf", sha256="ab" * 32)
    assert served.sha256 in info.value.message and "ab" * 32 in info.value.message
    # refused on the response headers: nothing is written (nginx may already have pushed the small file into the
    # socket, so the bytes the server sent are not a measure of what the client took)
    assert not (tmp_path / "w.gguf").exists() and not (tmp_path / "w.gguf.partial").exists()


def test_token_is_sent_but_never_in_errors(model_server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    with pytest.raises(download.DownloadError) as info:
        download.fetch(f"{model_server.endpoint()}/nope/resolve/main/x.gguf", tmp_path / "x.gguf")
    assert "404" in info.value.message and "hf_secret_value_123" not in info.value.message + str(info.value.hint)


def test_killed_download_resumes_and_ends_verified(model_server, gemma_file, tmp_path):
    """Kill a real downloader process half way (rate-limited link), then resume from its .partial."""
    served = model_server.add("google/gemma-3-270m-gguf", gemma_file.name, gemma_file)
    url = f"{model_server.endpoint(slow=True)}{served.url_path}"
    dest = tmp_path / "gemma.gguf"
    partial = Path(str(dest) + ".partial")
    code = ("import sys; from edgekit.models import download; "
            "download.fetch(sys.argv[1], sys.argv[2], sha256=sys.argv[3])")
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(dest), served.sha256])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < served.size // 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cut = partial.stat().st_size
    assert 0 < cut < served.size and not dest.exists()
    got = download.fetch(f"{model_server.endpoint()}{served.url_path}", dest, sha256=GEMMA_SHA)
    assert got.resumed_from == cut and got.downloaded == served.size - cut
    assert got.sha256 == GEMMA_SHA and dest.stat().st_size == 253_113_024 and not partial.exists()
