"""The device helper: the zipapp run here with `python3 helper.pyz SUBCOMMAND` against local things (an HTTP
server, a listening socket, nginx serving a model with Range), with Python 3.8 when this machine has it; and
run_helper through the `local` transport: one verified upload, reused, secrets on stdin only. Its `gguf` is
tested in test_gguf_validate.py."""

from __future__ import annotations

import hashlib
import getpass
import http.server
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from edgekit.device.events import parse_event
from edgekit.device.files import MARGIN, verified_sha256
from edgekit.errors import RemoteCommandFailed
from edgekit.models.tiny import tiny_llama_bytes
from edgekit.remote import helper
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from edgekit.service import probe
from edgekit.telemetry import remote as telemetry

GOOD = tiny_llama_bytes()
SECRET = "sk-edgekit-secret-4242"


def _python38() -> str:
    """Python 3.8 (JetPack 5's python3) when this machine has one, else the running interpreter."""
    for candidate in (os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python"), shutil.which("python3.8")):
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return sys.executable


PYTHON = _python38()


@pytest.fixture(scope="module")
def pyz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("helper") / "helper.pyz"
    path.write_bytes(helper.build())
    return path


def run(pyz: Path, *args: str, stdin: str | None = None) -> tuple[int, list[dict], str]:
    """The helper as the device runs it; -I -S: no site-packages, no PYTHONPATH, no current directory."""
    p = subprocess.run([PYTHON, "-I", "-S", str(pyz), *args], input=stdin, capture_output=True, text=True,
                       timeout=60, cwd=pyz.parent)
    events = [e for e in map(parse_event, p.stdout.splitlines()) if e is not None]
    return p.returncode, events, p.stderr


# -- the zipapp --------------------------------------------------------------------------------------------------

def test_the_zipapp_is_reproducible_and_holds_every_device_module():
    blob = helper.build()
    helper.build.cache_clear()
    assert helper.build() == blob
    infos = zipfile.ZipFile(io.BytesIO(blob)).infolist()
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    names = {i.filename for i in infos}
    assert {"__main__.py", "edgekit/device/cli.py", "edgekit/device/fetch.py", "edgekit/models/gguf_header.py",
            "edgekit/telemetry/collector.py", "edgekit/telemetry/tegrastats.py", "edgekit/telemetry/jtop.py",
            "edgekit/facts/jetson.py", "edgekit/facts/base.py"} <= names
    assert helper.helper_name(blob) == f"helper-{hashlib.sha256(blob).hexdigest()[:16]}.pyz"


def test_every_module_compiles_with_the_device_python(pyz):
    """JetPack 5 has Python 3.8: no newer syntax (match, ...) in any module the helper carries; the subcommands
    below run with it too."""
    code = ("import sys, zipfile\n"
            "z = zipfile.ZipFile(sys.argv[1])\n"
            "for n in z.namelist():\n"
            "    compile(z.read(n), n, 'exec')\n"
            "    print(n)\n")
    p = subprocess.run([PYTHON, "-I", "-S", "-c", code, str(pyz)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and len(p.stdout.split()) == len(helper.MODULES) + 3, p.stderr


def test_device_modules_stay_under_400_lines():
    for rel in helper.MODULES[:7]:          # edgekit/device/*.py and models/gguf_header.py
        lines = (helper.PACKAGE / rel).read_text().count("\n")
        assert lines <= 400, f"{rel} has {lines} lines"


def test_a_wrong_command_line_says_how(pyz):
    code, events, err = run(pyz, "nope")
    assert code == 2 and events == [] and "fetch,gguf,http,tcp,telemetry" in err
    assert run(pyz, "tcp", "host")[0] == 2


# -- each subcommand, run locally --------------------------------------------------------------------------------

class _Api(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.seen.append(("GET", self.path, self.headers.get("Authorization"), None))
        self._answer(200, {"status": "ok"}) if self.path == "/health" else self._answer(404, {"error": "no"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.seen.append(("POST", self.path, self.headers.get("Authorization"), body))
        self._answer(200, {"echo": body})

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    _Api.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Api.seen
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http(pyz, api):
    base, seen = api
    code, events, _ = run(pyz, "http", stdin=json.dumps({"url": f"{base}/health"}))
    assert code == 0 and events == [{"event": "http", "status": 200, "body": '{"status": "ok"}'}]
    request = {"url": f"{base}/v1/chat", "body": {"q": 1}, "key": SECRET, "timeout": 5,
               "owner": getpass.getuser()}               # the listener runs as this user: it is "edgekit's" here
    code, events, _ = run(pyz, "http", stdin=json.dumps(request))
    assert events[-1]["status"] == 200 and json.loads(events[-1]["body"]) == {"echo": {"q": 1}}
    assert seen[-1] == ("POST", "/v1/chat", f"Bearer {SECRET}", {"q": 1})
    # a listener that is not the service user's never gets the key (nor one that names no service user)
    for owner in ("nobody", None):
        code, events, _ = run(pyz, "http", stdin=json.dumps({**request, "owner": owner}))
        assert events[-1]["status"] == 0 and "the API key was not sent" in events[-1]["body"], events
    assert len(seen) == 2 and all(auth is None for _, _, auth, _ in seen[:1])
    assert run(pyz, "http", stdin=json.dumps({"url": f"{base}/nope"}))[1][-1]["status"] == 404
    code, events, _ = run(pyz, "http", stdin=json.dumps({"url": f"http://127.0.0.1:{_free_port()}/"}))
    assert code == 0 and events[-1]["status"] == 0 and "refused" in events[-1]["body"]


def test_tcp(pyz):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert run(pyz, "tcp", "127.0.0.1", str(port))[:2] == (0, [{"event": "tcp", "reachable": True,
                                                                      "error": None}])
    code, events, _ = run(pyz, "tcp", "127.0.0.1", str(_free_port()), "2")
    assert code == 0 and events[-1]["reachable"] is False and "refused" in events[-1]["error"]


def test_fetch_resumes_verifies_and_reports(pyz, model_server, tmp_path):
    """Range against nginx: a .partial is resumed (206), the file verified and renamed, its sidecar written."""
    src = tmp_path / "tiny.gguf"
    src.write_bytes(GOOD)
    served = model_server.add("acme/helper", "tiny.gguf", src)
    dest = tmp_path / "dev" / "tiny.gguf"
    dest.parent.mkdir()
    Path(f"{dest}.partial").write_bytes(GOOD[:100_000])
    config = {"mode": "fetch", "url": model_server.endpoint() + served.url_path, "dest": str(dest),
              "sha256": served.sha256, "size": served.size}
    code, events, err = run(pyz, "fetch", json.dumps(config))
    assert code == 0, err
    assert events[0]["event"] == "start" and events[0]["resume_from"] == 100_000
    assert events[-1] == {"event": "done", "sha256": served.sha256, "size": len(GOOD),
                          "downloaded": len(GOOD) - 100_000, "resumed_from": 100_000, "verified_against": "expected"}
    assert dest.read_bytes() == GOOD and verified_sha256(str(dest)) == served.sha256
    last = [r for r in model_server.access_log() if r["path"] == served.url_path][-1]
    assert last["status"] == 206 and last["range"] == "bytes=100000-"
    check = {"mode": "check", "dest": str(dest), "sha256": served.sha256}
    assert run(pyz, "fetch", json.dumps(check))[1][-1] == {"event": "check", "state": "verified",
                                                           "sha256": served.sha256, "size": len(GOOD)}
    code, events, _ = run(pyz, "fetch", json.dumps({**config, "sha256": "ab" * 32, "dest": str(tmp_path / "x")}))
    assert code == 3 and events[-1]["event"] == "error" and events[-1]["kind"] == "etag"


def test_fetch_space_and_adopt(pyz, tmp_path):
    dest = tmp_path / "m.gguf"
    code, events, _ = run(pyz, "fetch", json.dumps({"mode": "space", "dest": str(dest), "size": 1 << 20}))
    assert code == 0 and events[-1]["event"] == "space" and events[-1]["need"] == (1 << 20) + MARGIN
    code, events, _ = run(pyz, "fetch", json.dumps({"mode": "space", "dest": str(dest), "size": 1 << 60}))
    assert code == 3 and events[-1]["kind"] == "space" and "not enough disk space" in events[-1]["message"]
    Path(f"{dest}.partial").write_bytes(GOOD)
    sha = hashlib.sha256(GOOD).hexdigest()
    code, events, _ = run(pyz, "fetch", json.dumps({"mode": "adopt", "dest": str(dest), "sha256": sha,
                                                   "size": len(GOOD)}))
    assert code == 0 and events[-1]["event"] == "done" and dest.read_bytes() == GOOD
    Path(f"{dest}.partial").write_bytes(b"wrong")
    code, events, _ = run(pyz, "fetch", json.dumps({"mode": "adopt", "dest": str(dest), "sha256": sha}))
    assert code == 3 and events[-1]["kind"] == "checksum" and not Path(f"{dest}.partial").exists()


def test_telemetry(pyz):
    p = subprocess.run([PYTHON, "-I", "-S", str(pyz), "telemetry", "--interval", "50", "--count", "1", "--source",
                        "procfs"], capture_output=True, text=True, timeout=30)
    out = telemetry.Stream()
    for line in p.stdout.splitlines():
        out.feed(line)
    assert p.returncode == 0 and not out.noise and not out.errors, p.stderr
    assert out.source.source == "procfs" and len(out.samples) == 1 and out.samples[0].ram_total_mb


# -- through the `local` transport -------------------------------------------------------------------------------

class Recording(Transport):
    """The local transport, recording every command line, its stdin and its environment."""

    def __init__(self):
        super().__init__(parse_target("local"))
        self.commands: list[tuple[str, str | None, object]] = []
        self.puts: list[str] = []

    def run(self, command, **kwargs):
        self.commands.append((command, kwargs.get("stdin"), kwargs.get("env")))
        return super().run(command, **kwargs)

    def put(self, local, remote, **kwargs):
        self.puts.append(remote)
        return super().put(local, remote, **kwargs)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """The login user's home for the local device (where ~/.cache/edgekit goes)."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """This machine as the device, with a home of its own: the helper is uploaded once for these tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("device-home")))
        with Recording() as t:
            yield t


def test_helper_is_uploaded_once_verified_and_reused(home):
    folder = home / ".cache" / "edgekit"
    folder.mkdir(parents=True, mode=0o755)
    old = [folder / "helper-0123456789abcdef.pyz", folder / "telemetry-0123456789ab.pyz",
           folder / ".helper-0123456789abcdef.pyz.0a1b2c3d4e5f"]       # another version, the old collector, a temp
    for stale in old:
        stale.write_bytes(b"from a run two days ago")
        os.utime(stale, (time.time() - 2 * 86400,) * 2)
    young = folder / "helper-fedcba9876543210.pyz"                  # another version's, maybe running now
    young.write_bytes(b"another edgekit's helper")
    with Recording() as t:
        path = helper.helper_path(t)
        assert path == f"{folder}/{helper.helper_name(helper.build())}"
        assert Path(path).read_bytes() == helper.build() and len(t.puts) == 1
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(Path(path).stat().st_mode) == 0o600
        assert sorted(p.name for p in folder.iterdir()) == sorted([Path(path).name, young.name])   # no temp left
        before = len(t.commands)
        assert helper.helper_path(t) == path and len(t.commands) == before     # cached per transport
    with Recording() as t:
        assert helper.helper_path(t) == path and t.puts == []                   # on the device: reused
    Path(path).write_bytes(b"same name, other bytes")
    with Recording() as t:
        assert helper.helper_path(t) == path and len(t.puts) == 1
    assert Path(path).read_bytes() == helper.build()


def test_a_corrupted_upload_is_never_put_in_place(home):
    class Corrupting(Recording):
        def put(self, local, remote, **kwargs):
            Path(local).write_bytes(b"cut short")
            return super().put(local, remote, **kwargs)

    with Corrupting() as t, pytest.raises(RemoteCommandFailed, match="does not have sha256"):
        helper.helper_path(t)
    assert list((home / ".cache" / "edgekit").iterdir()) == []


def test_parse_state():
    sha = "ab" * 32
    assert helper.parse_state(f"home=/home/nvidia\npython3=yes\n{sha}  /home/nvidia/.cache/edgekit/h.pyz\n") == \
        ("/home/nvidia", True, sha)
    assert helper.parse_state("home=/root\n") == ("/root", False, None)


def test_run_helper_events_and_failures(device, tmp_path):
    (tmp_path / "t.gguf").write_bytes(GOOD)
    seen = []
    events, result = helper.run_helper(device, "gguf", [str(tmp_path / "t.gguf")], on_event=seen.append)
    assert result.ok and events == seen and events[-1]["event"] == "gguf"
    assert helper.last_event(events, result, "gguf")["architecture"] == "llama"
    events, result = helper.run_helper(device, "nope")
    assert events == [] and result.exit_code == 2
    with pytest.raises(RemoteCommandFailed, match="helper.pyz nope"):
        helper.last_event(events, result, "nope")


def test_probe_sends_the_key_on_stdin_only(device, api, monkeypatch):
    base, seen = api
    status, body = probe.request(device, f"{base}/v1/chat", body={"m": 2}, key=SECRET, timeout=5)
    assert status == 0 and "the API key was not sent" in body and seen == []    # the listener is not `edgekit`'s
    monkeypatch.setattr(probe.L, "SERVICE_USER", getpass.getuser())             # this machine's server user
    status, body = probe.request(device, f"{base}/v1/chat", body={"m": 2}, key=SECRET, timeout=5)
    assert status == 200 and json.loads(body) == {"echo": {"m": 2}}
    assert seen[-1][2] == f"Bearer {SECRET}"
    assert not any(SECRET in command or SECRET in json.dumps(env) for command, _, env in device.commands)
    assert any(stdin and SECRET in stdin for _, stdin, _ in device.commands)


def test_tcp_reachable(device):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert probe.tcp_reachable(device, "127.0.0.1", listener.getsockname()[1]) is True
    assert probe.tcp_reachable(device, "127.0.0.1", _free_port(), timeout=2) is False


def test_telemetry_stream_runs_the_helper(device):
    items = []
    out = telemetry.stream(device, items.append, interval_ms=50, count=1)
    assert device.commands[-1][0].endswith(" telemetry --interval 50 --count 1")
    assert out.source is not None and len(out.samples) == 1 and items[-1] is out.samples[0]


def test_a_dry_run_runs_the_helper_from_memory_and_writes_nothing(tmp_path, monkeypatch):
    """A dry run's reads need the helper, but it is not on the device: it runs from stdin (IN_MEMORY), nothing is
    uploaded to the helper's folder, a model check writes no sidecar, and its answers are the uploaded helper's."""
    from edgekit.models.on_device import ModelFile
    from edgekit.remote.plan import Context

    device = tmp_path / "device"
    home = device / "home"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    model = device / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    with Transport(parse_target("local")) as t:
        ctx = Context(t, dry_run=True)
        where = helper.placed(ctx.transport)
        assert not where.present and where.path.startswith(f"{home}/.cache/edgekit/helper-")
        assert ctx.fact(ModelFile(str(model), sha))["state"] == "verified"
        events, res = helper.run_helper(ctx.transport, "tcp", ["127.0.0.1", "1", "1"])
        assert res.exit_code == 0 and events[-1]["event"] == "tcp" and events[-1]["reachable"] is False
        assert not (home / ".cache").exists() and sorted(p.name for p in device.iterdir()) == ["home", "m.gguf"]
        with pytest.raises(RuntimeError, match="a dry run writes nothing"):
            ctx.transport.put(model, str(device / "x"))
        real = Context(t)                               # the same device, a real run: the helper is uploaded once
        assert real.fact(ModelFile(str(model), sha))["state"] == "verified"
        assert helper.placed(real.transport).present and Path(where.path).is_file()
        assert verified_sha256(str(model)) == sha       # the real check recorded its sidecar
