"""Bench on the device without trusting other processes, with sudo through the transport, and without secrets in
what it writes or prints.

The device here is a real local shell with the device's paths (/opt/edgekit, /etc/edgekit, /proc) mapped into a
temp folder, fake `systemctl`/`pgrep`/`sudo` on PATH, and a fake llama-server over HTTP on loopback. On it runs
edgekit's service (MainPID 4242, build b1-abc) and a `llama-server` a local user started from a directory whose
name is a shell command (PID 100, lower than the service's, on the same port, with `--api-key` on its command line).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.bench import llama_bench as lb
from edgekit.bench import report
from edgekit.redact import MASK, is_secret_name, redact
from edgekit.bench.runner import BenchSettings, run_bench
from edgekit.bench.workload import Workload
from edgekit.errors import ConnectError, EdgekitError, RemoteCommandFailed, UsageError
from edgekit.remote.transport import Result
from tests.fixtures import captured as cap
from tests.test_bench import _Handler as _JsonHandler   # log_message (quiet) and _send (JSON) of the bench tests

MODEL = "/opt/edgekit/models/g/g.gguf"
KEY = "edgekit-service-key-0123456789"
EVE_KEY = "K-eve-secret-1234"
HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
WORKLOAD = Workload(prompt_lengths=[], concurrency_levels=[], warmup=0, repetitions=1, gen_tokens=128,
                    llama_bench_pp=512, llama_bench_reps=1)


# -- pure parts -----------------------------------------------------------------------------------------------
def test_install_prefix_only_accepts_a_build_under_the_install_root():
    assert lb.install_prefix("/opt/edgekit/llama.cpp/b4500-1a2b3c\n") == "/opt/edgekit/llama.cpp/b4500-1a2b3c"
    for bad in ("", "/tmp/q;touch${IFS}X;#", "/opt/edgekit/llama.cpp", "/opt/edgekit/llama.cpp/current",
                "/opt/edgekit/llama.cpp/../../../tmp/x", "/opt/edgekit/llama.cpp/b1/bin", "opt/edgekit/llama.cpp/b1",
                "/opt/edgekit/llama.cpp/b1;id", "/opt/edgekit/llama.cpp/$(id)", "/opt/edgekit/llama.cpp/.hidden"):
        with pytest.raises(EdgekitError) as e:
            lb.install_prefix(bad)
        assert "edgekit provision" in e.value.hint


def test_probe_output_to_the_service_process():
    """Captured from a provisioned stand-in: readlink -f current, the unit's cmdline, its env file."""
    env_file = Path(__file__).resolve().parents[1].joinpath("systemd", "llama-server.env").read_text()
    out = ("/opt/edgekit/llama.cpp/b1-abc\n@@cmdline\n/opt/edgekit/llama.cpp/current/bin/llama-server\0\n"
           f"@@env\n{env_file}")
    proc = lb.parse_probe(4242, out)
    assert (proc.pid, proc.prefix, proc.port, proc.parallel, proc.ctx_size, proc.n_gpu_layers) == (
        4242, "/opt/edgekit/llama.cpp/b1-abc", 8080, 2, 4096, "999")
    assert proc.model == "/opt/edgekit/models/chinese-alpaca-2-1.3b/ggml-model-q4_k.gguf"   # 8 GB: q4_k
    assert (proc.exe, proc.bench_exe, proc.stamp_path) == (
        "/opt/edgekit/llama.cpp/b1-abc/bin/llama-server", "/opt/edgekit/llama.cpp/b1-abc/bin/llama-bench",
        "/opt/edgekit/llama.cpp/b1-abc/build-stamp.json")
    with pytest.raises(EdgekitError):
        lb.parse_probe(4242, out.replace("/opt/edgekit/llama.cpp/b1-abc\n", "/home/eve/llama.cpp\n", 1))


def test_argv0_is_never_taken_as_the_binary():
    evil = "/tmp/q;touch${IFS}X;#/bin/llama-server"
    proc = lb.parse_server_cmdline(100, "/opt/edgekit/llama.cpp/b1-abc", f"{evil}\0-m\0m.gguf\0")
    assert proc.exe == "/opt/edgekit/llama.cpp/b1-abc/bin/llama-server"
    assert "touch" not in lb.command(proc, 512, 128, 1)
    outside = lb.parse_server_cmdline(100, "/tmp/q;touch${IFS}X;#", f"{evil}\0-m\0m.gguf\0")
    with pytest.raises(EdgekitError):
        lb.command(outside, 512, 128, 1)
    quoted = lb.parse_server_cmdline(1, "/opt/edgekit/llama.cpp/b1-abc", "x\0-m\0/m/a b;id.gguf\0-ngl\0$(id)\0")
    cmd = lb.command(quoted, 512, 128, 1)
    assert "'/m/a b;id.gguf'" in cmd and "'$(id)'" in cmd


def test_a_server_at_another_port_or_with_another_model_is_not_the_service():
    proc = lb.parse_server_cmdline(1, "/opt/edgekit/llama.cpp/b1", "x\0", f"LLAMA_ARG_MODEL={MODEL}\0")
    assert lb.not_served_by(proc, 8080, MODEL) is None          # llama-server's default port
    assert "port is 8081" in lb.not_served_by(proc, 8081, MODEL)
    assert "/home/eve/m.gguf" in lb.not_served_by(proc, 8080, "/home/eve/m.gguf")
    assert lb.not_served_by(proc, 8080, None) is None


def test_redact_argv_fields_and_text():
    argv = ["/x/llama-server", "--api-key", "K1", "--api-key=K2", "-hft", "T1", "--hf-token", HF,
            "--api-key-file", "/etc/edgekit/api-key", "-m", "m.gguf", "--password=pw", "--port", "8080"]
    assert redact(argv) == ["/x/llama-server", "--api-key", MASK, f"--api-key={MASK}", "-hft", MASK, "--hf-token",
                            MASK, "--api-key-file", "/etc/edgekit/api-key", "-m", "m.gguf", f"--password={MASK}",
                            "--port", "8080"]
    data = {"api_key": "K3", "HF_TOKEN": "T2", "headers": {"Authorization": "Bearer K4"}, "my_secret": ["a", "b"],
            "api_key_file": "/etc/edgekit/api-key", "prompt_tokens": 512, "j_per_token": 0.25, "key": None,
            "errors": [f"HTTP 401 with Authorization: Bearer K5 for http://u:pw@h:1/?token=T3&x=1",
                       f"ran llama-server --api-key K6 -m m.gguf", f"token {HF} leaked", "HF_TOKEN=T4 and x=1",
                       "uses the known key " + KEY]}
    out = json.dumps(redact(data, [KEY]))
    for secret in ("K3", "T2", "K4", '"a"', '"b"', "K5", ":pw@", "T3", "K6", HF, "T4", KEY):
        assert secret not in out, secret
    kept = redact(data, [KEY])
    assert kept["api_key_file"] == "/etc/edgekit/api-key" and kept["prompt_tokens"] == 512
    assert kept["j_per_token"] == 0.25 and kept["key"] is None and "x=1" in kept["errors"][0]
    assert "-m m.gguf" in kept["errors"][1] and "Bearer <redacted>" in kept["errors"][0]
    assert redact(redact(data, [KEY]), [KEY]) == kept                      # idempotent
    assert is_secret_name("--api-key") and is_secret_name("x-api-key") and not is_secret_name("--api-key-file")
    assert not is_secret_name("prompt_tokens") and not is_secret_name("--port")


def test_result_files_and_compare_never_show_a_secret(tmp_path):
    result = json.loads(json.dumps(_minimal_result()))
    result["server_process"] = {"pid": 1, "exe": "/x", "args": ["/x/llama-server", "--api-key", EVE_KEY]}
    result["errors"] = [f"Authorization: Bearer {EVE_KEY}"]
    path = report.write_json(result, tmp_path / "r.json")
    assert EVE_KEY not in path.read_text()
    old = tmp_path / "old.json"                    # written by a version that did not redact
    old.write_text(json.dumps(result))
    assert EVE_KEY not in json.dumps(report.load(old))


def _minimal_result() -> dict:
    return {"schema": report.RESULT_SCHEMA, "cases": [], "url": "http://h:1", "workload": WORKLOAD.to_json(),
            "model": {"name": "g"}, "summary": {"cases": []}}


# -- a device in a local shell --------------------------------------------------------------------------------
class ShellDevice:
    """Runs commands in a local sh with the device paths mapped under `root`; records (command, via sudo)."""

    MAPPED = ("/opt/edgekit", "/etc/edgekit", "/proc/")

    def __init__(self, root: Path, bin_dir: Path):
        self.root, self.bin_dir = root, bin_dir
        self.name, self.address = "dev1", "127.0.0.1"
        self.commands: list[tuple[str, bool]] = []
        self.sudo_error: Exception | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def run(self, command: str, *, sudo: bool = False, check: bool = True, timeout=None, **kwargs) -> Result:
        self.commands.append((command, sudo))
        if sudo and self.sudo_error:
            raise self.sudo_error
        mapped = command
        for path in self.MAPPED:
            mapped = mapped.replace(path, f"{self.root}{path}")
        env = {**os.environ, "PATH": f"{self.bin_dir}:{os.environ['PATH']}"}
        res = subprocess.run(["sh", "-c", mapped], capture_output=True, text=True, env=env, cwd=self.root, timeout=60)
        result = Result(command, res.returncode, res.stdout.replace(str(self.root), ""), res.stderr)
        if check and not result.ok:
            raise RemoteCommandFailed(command, result.exit_code, result.stdout + result.stderr)
        return result

    def sudo(self, command: str, **kwargs) -> Result:
        return self.run(command, sudo=True, **kwargs)

    def plain_commands(self) -> list[str]:
        return [c for c, sudo in self.commands if not sudo]


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


class _FakeLlamaServer(_JsonHandler):
    model_path = MODEL

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {KEY}":
            return True
        self._send(401, {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}})
        return False

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self._authorized() and self.path == "/props":
            self._send(200, {"total_slots": 1, "model_path": self.model_path, "build_info": "b1-abc",
                             "default_generation_settings": {"n_ctx": 4096}})
        elif self.path == "/v1/models":
            self._send(200, {"data": [{"id": "g", "meta": {"size": 1000}}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not self._authorized():
            return
        if self.path == "/tokenize":
            self._send(200, {"tokens": list(range(1, 40))})
            return
        n = body.get("n_predict", 1)
        timings = {"prompt_n": len(body.get("prompt") or []), "predicted_n": n, "prompt_per_second": 7000.0,
                   "predicted_per_second": 200.0, "prompt_ms": 1.0, "predicted_ms": 1.0, "cache_n": 0}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b'data: {"content": "a"}\n\n')
        self.wfile.write(b"data: " + json.dumps({"content": "", "stop": True, "timings": timings}).encode() + b"\n\n")
        self.close_connection = True


@pytest.fixture
def fake_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeLlamaServer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def device(tmp_path, fake_server, monkeypatch):
    """edgekit's service (PID 4242, port = the fake server's) and Eve's `llama-server` (PID 100, same port)."""
    root, bin_dir = tmp_path / "dev", tmp_path / "fakebin"
    port = fake_server
    _write(bin_dir / "systemctl", "#!/bin/sh\nprintf 'ActiveState=active\\nSubState=running\\nMainPID=4242\\n'\n", 0o755)
    _write(bin_dir / "pgrep", "#!/bin/sh\nprintf '100\\n4242\\n'\n", 0o755)
    _write(bin_dir / "sudo", '#!/bin/sh\n[ "$1" = -n ] && shift\n[ "$1" = -- ] && shift\nexec "$@"\n', 0o755)
    build = root / "opt/edgekit/llama.cpp/b1-abc"
    _write(build / "bin/llama-server", "#!/bin/sh\n", 0o755)
    _write(build / "build-stamp.json", json.dumps({"version": "b1-abc", "cpu": True}))
    _write(root / "bench.json", cap.LLAMA_BENCH_JSON_README)
    _write(build / "bin/llama-bench", f'#!/bin/sh\necho "$@" > {root}/bench-args\ncat {root}/bench.json\n', 0o755)
    os.symlink("b1-abc", root / "opt/edgekit/llama.cpp/current")
    settings = {"LLAMA_ARG_MODEL": MODEL, "LLAMA_ARG_PORT": str(port), "LLAMA_ARG_THREADS": "2",
                "LLAMA_ARG_N_GPU_LAYERS": "999", "LLAMA_ARG_API_KEY_FILE": "/etc/edgekit/api-key"}
    _write(root / "etc/edgekit/llama-server.env", "# Managed by edgekit\n" +
           "".join(f"{k}={v}\n" for k, v in settings.items()))
    _write(root / "etc/edgekit/api-key", KEY + "\n", 0o600)
    service = root / "proc/4242"
    _write(service / "cmdline", "/opt/edgekit/llama.cpp/current/bin/llama-server\0")
    _write(service / "environ", "".join(f"{k}={v}\0" for k, v in settings.items()))
    os.symlink(build / "bin/llama-server", service / "exe")
    marker = tmp_path / "PWNED"
    evil = f"/tmp/q;touch${{IFS}}{marker};#/bin/llama-server"
    eve = root / "proc/100"
    _write(eve / "cmdline", "\0".join([evil, "-m", "/home/eve/m.gguf", "--port", str(port), "--api-key",
                                        EVE_KEY]) + "\0")
    _write(eve / "environ", "")
    os.symlink(evil, eve / "exe")
    monkeypatch.setattr("edgekit.facts.device.read_facts", lambda transport: _NoFacts())
    dev = ShellDevice(root, bin_dir)
    dev.port, dev.marker, dev.bench_args = port, marker, root / "bench-args"
    return dev


class _NoFacts:
    def to_json(self) -> dict:
        return {}


def _bench(device, tmp_path, port=None) -> dict:
    settings = BenchSettings(url=f"http://127.0.0.1:{port or device.port}", api_key=KEY, workload=WORKLOAD,
                             llama_bench=True, out_dir=str(tmp_path / "out"), ready_timeout=10)
    return run_bench(settings, device, telemetry=False)


def test_bench_uses_the_service_and_its_build_never_another_users_llama_server(device, tmp_path):
    result = _bench(device, tmp_path)
    assert not device.marker.exists(), "a directory name was run as a shell command"
    assert result["errors"] == [] and result["complete"]
    assert result["server_process"] == {"pid": 4242, "exe": "/opt/edgekit/llama.cpp/b1-abc/bin/llama-server",
                                        "args": ["/opt/edgekit/llama.cpp/current/bin/llama-server"]}
    assert result["build_stamp"] == {"version": "b1-abc", "cpu": True}
    assert result["llama_bench"]["command"].startswith(f"/opt/edgekit/llama.cpp/b1-abc/bin/llama-bench -m {MODEL} ")
    assert "-t 2 -ngl 999" in device.bench_args.read_text()
    assert result["summary"]["llama_bench_agreement"][0]["llama_bench_tps"] == pytest.approx(7100.002165)
    assert not any("/tmp/q" in c or "pgrep" in c for c, _ in device.commands)
    # what needs root is read through the transport's sudo (so --ask-become-pass works), never `sudo -n` inline
    assert not any("sudo" in c for c in device.plain_commands())
    assert any("/proc/4242/environ" in c for c, sudo in device.commands if sudo)
    saved = Path(result["files"]["json"]).read_text()
    assert EVE_KEY not in saved and KEY not in saved and "/home/eve" not in saved


def test_a_server_that_is_not_the_service_gets_no_llama_bench_and_the_result_says_why(device, tmp_path):
    env = device.root / "etc/edgekit/llama-server.env"
    env.write_text(env.read_text().replace(f"LLAMA_ARG_PORT={device.port}", "LLAMA_ARG_PORT=8080"))
    result = _bench(device, tmp_path)
    assert not device.marker.exists()
    assert result["llama_bench"] is None and not device.bench_args.exists()
    assert result["server_process"] is None and result["build_stamp"] is None
    why = " ".join(result["errors"])
    assert "--llama-bench skipped" in why and "not edgekit's service" in why and "listens on 8080" in why
    assert not any("llama-bench" in c for c in device.plain_commands())
    assert EVE_KEY not in Path(result["files"]["json"]).read_text()


def test_a_service_running_an_older_build_than_current_gets_no_llama_bench(device, tmp_path):
    old = device.root / "opt/edgekit/llama.cpp/b0-old/bin/llama-server"
    _write(old, "#!/bin/sh\n", 0o755)
    exe = device.root / "proc/4242/exe"
    exe.unlink()
    os.symlink(old, exe)
    result = _bench(device, tmp_path)
    assert result["llama_bench"] is None and not device.bench_args.exists()
    assert "systemctl restart edgekit-llama-server" in " ".join(result["errors"])
    assert result["build_stamp"] == {"version": "b1-abc", "cpu": True}     # the service itself was found


def test_sudo_needing_a_password_skips_llama_bench_with_the_hint(device, tmp_path):
    device.sudo_error = ConnectError("sudo on dev1 needs a password for jetson",
                                     hint="pass --ask-become-pass (or set EDGEKIT_BECOME_PASS)")
    result = _bench(device, tmp_path)
    assert result["llama_bench"] is None and "--ask-become-pass" in " ".join(result["errors"])


# -- the CLI reads the device's API key through the transport's sudo ------------------------------------------
def _cli_with(device, monkeypatch, *args: str):
    from edgekit.cli import app

    seen = {}

    def stop(settings, transport, telemetry=True):
        seen["api_key"] = settings.api_key
        raise UsageError("stopped by the test")

    monkeypatch.setattr("edgekit.cli.bench.open_transport", lambda *a, **k: device)
    monkeypatch.setattr("edgekit.cli.bench._run", stop)
    res = CliRunner().invoke(app, ["bench", "dev1", *args])
    return res, seen


def test_bench_reads_the_api_key_with_the_transports_sudo(device, monkeypatch):
    res, seen = _cli_with(device, monkeypatch)
    assert seen["api_key"] == KEY, res.exception
    assert ("cat /etc/edgekit/api-key", True) in device.commands
    assert not any("sudo" in c for c in device.plain_commands())


def test_bench_says_how_to_give_the_key_when_sudo_needs_a_password(device, monkeypatch):
    device.sudo_error = ConnectError("sudo on dev1 needs a password for jetson",
                                     hint="pass --ask-become-pass (or set EDGEKIT_BECOME_PASS)")
    res, seen = _cli_with(device, monkeypatch)
    assert isinstance(res.exception, ConnectError) and not seen
    assert "/etc/edgekit/api-key" in res.exception.message
    assert "--ask-become-pass" in res.exception.hint and "--api-key" in res.exception.hint
    (device.root / "etc/edgekit/api-key").unlink()            # a server without a key: nothing to read, no sudo
    device.commands.clear()
    res, seen = _cli_with(device, monkeypatch)
    assert seen == {"api_key": None} and not any(sudo for _, sudo in device.commands)
