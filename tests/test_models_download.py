"""Controller downloads against a real nginx serving files the Hub's way (Range, X-Linked-Etag/Size), and
against small http.server instances on 127.0.0.1 (redirects, plain/TLS, bodies without a length); full
disks are real small tmpfs mounts (root only, else skipped)."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.prereqs import unavailable

from edgekit import errors
from edgekit.device import files
from edgekit.device.events import parse_event
from edgekit.models import download
from edgekit.remote import helper

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
    assert files.verified_sha256(str(tmp_path / "out" / "blob.gguf")) == served.sha256
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
    full_sha = files.hash_file(str(small_file)).hexdigest()
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


def test_token_never_in_errors(model_server, tmp_path, monkeypatch):
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



# -- local servers and small disks --------------------------------------------------------------------------

class LocalServer:
    """http.server on 127.0.0.1 in a thread. routes: path -> fn(handler). With tls=(cert, key) the same port also
    speaks https (a connection that opens with a TLS handshake is wrapped), so a redirect can change the scheme
    and nothing else. Each request is recorded: scheme, path, Authorization header."""

    def __init__(self, routes: dict, tls: tuple[Path, Path] | None = None):
        self.routes = routes
        self.requests: list[dict] = []
        self.sent = 0
        self.tls = None
        if tls:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*map(str, tls))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"     # close-delimited bodies are possible (no Content-Length)

    def setup(self):
        self.scheme = "http"
        tls = self.server.owner.tls
        if tls is not None and self.request.recv(1, socket.MSG_PEEK) == b"\x16":
            self.request = tls.wrap_socket(self.request, server_side=True)
            self.scheme = "https"
        super().setup()

    def do_GET(self):
        owner = self.server.owner
        owner.requests.append({"scheme": self.scheme, "path": self.path,
                               "authorization": self.headers.get("Authorization")})
        route = owner.routes.get(self.path)
        if route is None:
            self.send_error(404)
        else:
            route(self)

    def log_message(self, *args):
        pass


def redirect(location: str):
    def route(h):
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return route


def body(data: bytes, status: int = 200):
    def route(h):
        h.send_response(status)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    return route


def endless(total: int):
    """`total` bytes with no Content-Length (the size is unknown until the server closes); counts what it sent."""
    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        block = b"\x01" * (1 << 20)
        try:
            for _ in range(total >> 20):
                h.wfile.write(block)
                h.server.owner.sent += len(block)
        except OSError:
            pass          # the client hung up
    return route


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (trust it with SSL_CERT_FILE)."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(mib) -> a directory on a fresh tmpfs of that size (needs root: tests/prereqs.py `tmpfs`)."""
    mounted: list[Path] = []

    def make(mib: int) -> Path:
        d = tmp_path / f"disk{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(d)], capture_output=True,
                           text=True)
        if r.returncode:
            unavailable("tmpfs", f"cannot mount one: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.fixture(scope="module")
def helper_pyz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("helper") / "helper.pyz"
    path.write_bytes(helper.build())
    return path


def run_device_fetch(pyz: Path, config: dict, token: str | None = None) -> tuple[int, list[dict]]:
    """Run the helper's fetch the way the device does (a python3 process, JSON events on stdout)."""
    argv = [sys.executable, str(pyz), "fetch", json.dumps(config)] + (["--token-stdin"] if token else [])
    r = subprocess.run(argv, input=(token + "\n") if token else None, capture_output=True, text=True, timeout=120)
    return r.returncode, [e for e in map(parse_event, r.stdout.splitlines()) if e is not None]


# -- disk space ------------------------------------------------------------------------------------------------

GEMMA_NEED = r"need 305\.4 MiB \(241\.4 MiB to write \+ 64\.0 MiB margin\), free 100\.0 MiB at "


def test_model_bigger_than_the_disk_is_refused_before_writing(model_server, gemma_file, small_disk):
    """The reported case: a 253 MB model into a 100 MB filesystem. Exit 5 with the numbers; the disk is untouched."""
    disk = small_disk(100)
    served = model_server.add("acme/big", gemma_file.name, gemma_file)
    free_before = _free(disk)
    with pytest.raises(errors.UnsuitableDevice) as info:
        download.fetch(f"{model_server.endpoint()}{served.url_path}", disk / "gemma.gguf")   # size learnt from headers
    assert info.value.exit_code == errors.UNSUITABLE == 5
    assert re.search(GEMMA_NEED + re.escape(str(disk)), info.value.message), info.value.message
    assert "mirror" not in info.value.hint and "/opt/edgekit/models" in info.value.hint
    assert not (disk / "gemma.gguf.partial").exists() and not (disk / "gemma.gguf").exists()
    assert _free(disk) == free_before
    # nginx may have pushed a socket buffer's worth before the client hung up, never the whole file
    assert model_server.bytes_sent(served.url_path) < 64 << 20


def test_known_size_is_checked_before_connecting(model_server, gemma_file, small_disk):
    """With the size known (the catalog's, as FetchModel passes it) the refusal needs no request at all."""
    disk = small_disk(100)
    served = model_server.add("acme/big-known", gemma_file.name, gemma_file)
    with pytest.raises(errors.UnsuitableDevice, match=GEMMA_NEED):
        download.fetch(f"{model_server.endpoint()}{served.url_path}", disk / "gemma.gguf", size=served.size)
    assert not any(r["path"] == served.url_path for r in model_server.access_log())


def test_disk_full_mid_download_stops_at_once_and_frees_the_disk(small_disk):
    """No size from the server (no Content-Length): the first ENOSPC stops the download, the partial is removed."""
    disk = small_disk(16)
    with LocalServer({"/m.gguf": endless(256 << 20)}) as server:
        with pytest.raises(errors.UnsuitableDevice) as info:
            download.fetch(server.url("/m.gguf"), disk / "m.gguf")
    message = info.value.message
    assert "the disk filled up" in message and f"at {disk}" in message and "the partial download was removed" in message
    assert re.search(r"need more than \d+\.\d MiB .*free 1\d\.\d MiB at ", message), message
    assert not (disk / "m.gguf.partial").exists() and not (disk / "m.gguf").exists()
    assert _free(disk) > 15 << 20
    assert server.sent < 96 << 20, f"the client read on after the disk was full ({server.sent >> 20} MiB sent)"


def test_device_side_refuses_a_model_bigger_than_the_disk(model_server, gemma_file, small_disk, helper_pyz):
    """The helper's fetch as it runs on the device: an error event of kind "space", and translate() makes it exit 5."""
    disk = small_disk(100)
    served = model_server.add("acme/big-device", gemma_file.name, gemma_file)
    dest = disk / "gemma3-270m" / "gemma.gguf"
    url = f"{model_server.endpoint()}{served.url_path}"
    code, events = run_device_fetch(helper_pyz, {"mode": "fetch", "url": url, "dest": str(dest),
                                                 "sha256": GEMMA_SHA, "size": served.size})
    assert code == 3 and events[-1]["event"] == "error" and events[-1]["kind"] == "space"
    assert re.search(GEMMA_NEED + re.escape(str(dest.parent)), events[-1]["message"]), events[-1]
    err = download.translate(files.FetchError(events[-1]["kind"], events[-1]["message"]), url)
    assert isinstance(err, errors.UnsuitableDevice) and err.exit_code == 5
    assert list(disk.iterdir()) == []            # refused before anything was made, even the directory
    # the same check for a push from the controller cache (mode "space")
    code, events = run_device_fetch(helper_pyz, {"mode": "space", "dest": str(dest), "size": served.size})
    assert code == 3 and events[-1]["kind"] == "space"
    code, events = run_device_fetch(helper_pyz, {"mode": "space", "dest": str(dest), "size": 10 << 20})
    assert code == 0 and events[-1]["event"] == "space" and events[-1]["need"] == (10 << 20) + files.MARGIN


def test_device_side_disk_full_mid_download(small_disk, helper_pyz):
    disk = small_disk(16)
    dest = disk / "m.gguf"
    with LocalServer({"/m.gguf": endless(256 << 20)}) as server:
        code, events = run_device_fetch(helper_pyz, {"mode": "fetch", "url": server.url("/m.gguf"),
                                                     "dest": str(dest)})
    assert code == 3 and events[-1]["kind"] == "space" and "the disk filled up" in events[-1]["message"]
    assert list(disk.iterdir()) == [] and server.sent < 96 << 20


def test_local_copy_checks_space_too(tmp_path, small_disk):
    disk = small_disk(16)
    src = tmp_path / "src.gguf"
    src.write_bytes(b"\0" * (8 << 20))
    with pytest.raises(errors.UnsuitableDevice, match=r"need 72\.0 MiB .*free 16\.0 MiB at " + re.escape(str(disk))):
        download.fetch(str(src), disk / "copy.gguf")
    assert sorted(p.name for p in disk.iterdir()) == ["copy.gguf.lock"]


# -- the token -------------------------------------------------------------------------------------------------

def test_token_dropped_on_https_to_http_redirect_on_the_same_host(tls_cert, monkeypatch, tmp_path):
    """https://127.0.0.1:P/a -> http://127.0.0.1:P/b: same host and port, only the scheme changes."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert[0]))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    data = os.urandom(100_000)
    with LocalServer({"/a": None, "/b": body(data)}, tls=tls_cert) as server:
        server.routes["/a"] = redirect(server.url("/b", scheme="http"))
        got = download.fetch(server.url("/a", scheme="https"), tmp_path / "x.gguf")
    assert [(r["scheme"], r["path"]) for r in server.requests] == [("https", "/a"), ("http", "/b")]
    assert server.requests[0]["authorization"] == "Bearer hf_secret_value_123"
    assert server.requests[1]["authorization"] is None
    assert got.size == len(data) and (tmp_path / "x.gguf").read_bytes() == data


def test_token_dropped_on_redirect_to_another_host(tls_cert, monkeypatch, tmp_path):
    """Two servers: https://127.0.0.1 (the endpoint) redirects to https://localhost (a CDN), then to plain http."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert[0]))
    data = os.urandom(100_000)
    with LocalServer({}, tls=tls_cert) as hub, LocalServer({"/c": body(data)}, tls=tls_cert) as cdn:
        hub.routes["/a"] = redirect(cdn.url("/b", scheme="https", host="localhost"))
        cdn.routes["/b"] = redirect(hub.url("/c2", scheme="https"))          # back to the first host: still dropped
        hub.routes["/c2"] = redirect(cdn.url("/c", scheme="http"))
        got = download.fetch(hub.url("/a", scheme="https"), tmp_path / "x.gguf")   # no HF_TOKEN: nothing to send
        assert all(r["authorization"] is None for r in hub.requests + cdn.requests)
        monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
        hub.requests.clear()
        cdn.requests.clear()
        (tmp_path / "x.gguf").unlink()
        got = download.fetch(hub.url("/a", scheme="https"), tmp_path / "x.gguf")
    assert hub.requests[0]["authorization"] == "Bearer hf_secret_value_123"
    assert [r["authorization"] for r in hub.requests[1:] + cdn.requests] == [None, None, None]
    assert got.size == len(data) and got.warnings == []    # dropped for the host change: nothing to warn about


def test_token_not_sent_to_a_plain_http_endpoint(monkeypatch, tmp_path, helper_pyz):
    """HF_ENDPOINT=http://...: the token stays home; a warning says so, and a 401 names the reason and the fix."""
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    data = os.urandom(50_000)
    with LocalServer({"/pub.gguf": body(data), "/gated.gguf": body(b"", status=401)}) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.url(""))
        got = download.fetch(f"{download.endpoint()}/pub.gguf", tmp_path / "pub.gguf")
        assert got.warnings == [f"HF_TOKEN was not sent to http://127.0.0.1:{mirror.port}: plain http is not "
                                "encrypted (use an https:// endpoint to send it)"]
        with pytest.raises(download.DownloadError) as info:
            download.fetch(f"{download.endpoint()}/gated.gguf", tmp_path / "gated.gguf")
        # the device side reports the same as an event
        code, events = run_device_fetch(helper_pyz, {"mode": "fetch", "url": mirror.url("/pub.gguf"),
                                                     "dest": str(tmp_path / "dev.gguf")}, token="hf_secret_value_123")
    assert all(r["authorization"] is None for r in mirror.requests)
    assert "HTTP 401" in info.value.message and "HF_TOKEN was not sent" in info.value.message
    assert "https://" in info.value.hint and "--hf-endpoint" in info.value.hint
    assert "hf_secret_value_123" not in info.value.message + info.value.hint
    assert code == 0 and events[0]["event"] == "warning" and events[-1]["event"] == "done"


@pytest.mark.e2e
def test_device_pull_refused_on_a_small_disk(standin_factory, model_server, gemma_file):
    """A 100 MB filesystem at the model's directory on a stand-in: exit 5, the numbers, nothing left behind."""
    from tests.conftest import run_cli

    sb = standin_factory("t-models")
    model_server.add("unsloth/gemma-3-270m-it-GGUF", "gemma3-270m-q4_k_m.gguf", gemma_file)
    ssh = ["ssh", "-F", str(sb.ssh_config), sb.name]
    where = "/opt/edgekit/models/gemma3-270m"
    subprocess.run(ssh + [f"sudo rm -rf {where} && sudo mkdir -p {where}"], check=True)
    if subprocess.run(ssh + [f"sudo mount -t tmpfs -o size=100m tmpfs {where}"]).returncode:
        unavailable("tmpfs", "the stand-in cannot mount one")
    try:
        r = run_cli("models", "pull", "gemma3-270m", "--allow-unpinned", "--target", sb.name, "--hf-endpoint",
                    model_server.endpoint(sb.host_address), "--fetch-on", "device",
                    env={"EDGEKIT_SSH_CONFIG": str(sb.ssh_config)})
        assert r.returncode == 5, r.stderr
        assert "need 305.4 MiB" in r.stderr and f"free 100.0 MiB at {where}" in r.stderr
        left = subprocess.run(ssh + [f"ls -A {where}"], capture_output=True, text=True, check=True).stdout.split()
        assert left == []
    finally:
        subprocess.run(ssh + [f"sudo umount {where}"])
