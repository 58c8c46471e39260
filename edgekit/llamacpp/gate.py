"""The build gate: a new llama.cpp build proves it runs on the device before anything switches to it.

The gate starts the build's own llama-server as a transient systemd service with the hardening of the real unit
(`systemd-run -p ...`, as the service user, so a seccomp, device or memory rule that breaks the server breaks it
here too), on a tiny GGUF (edgekit.models.tiny) over a unix socket (no port to collide with), asks it for a
few tokens, reads its log and stops it. On a CUDA build every layer must be offloaded and the log must name
the CUDA device. The verdict is written next to the build (gate.json, with this device's machine-id) and
judged by a pure function (`judge`) that turns a signal or a CUDA error into plain words.
"""

from __future__ import annotations

import json
import re
import signal
import time
from dataclasses import asdict, dataclass, field

from edgekit import layout as L
from edgekit.errors import UnsuitableDevice
from edgekit.models.tiny import tiny_llama_bytes
from edgekit.remote.command import Check, Op, Upload, q, sh
GATE_MODEL = f"{L.GATE_DIR}/tiny-llama.gguf"
N_PREDICT = 8
# The real unit's [Service] settings the gate applies too (not ExecStart/Restart/EnvironmentFile/timeouts).
SANDBOX_KEYS = ("User", "Group", "SupplementaryGroups", "UMask", "MemoryMax", "MemorySwapMax", "OOMScoreAdjust",
                "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadOnlyPaths", "PrivateDevices",
                "DeviceAllow", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "ProtectProc", "RestrictNamespaces",
                "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute", "RemoveIPC",
                "PrivateUsers", "KeyringMode", "CapabilityBoundingSet", "AmbientCapabilities",
                "RestrictAddressFamilies", "SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber")

# [Service] settings newer than some Jetson's systemd: a unit file skips an unknown key, systemd-run refuses it.
# (JetPack 5 / Ubuntu 20.04 has systemd 245.)
MIN_SYSTEMD = {"ProtectProc": 247}

SIGNAL_WORDS = {
    "SIGILL": "this build uses CPU instructions this machine cannot run",
    "SIGSYS": "a system call was refused by the service's sandbox (SystemCallFilter)",
    "SIGSEGV": "it crashed (segmentation fault)",
    "SIGBUS": "it crashed (bus error: a truncated or unreadable file?)",
    "SIGABRT": "it aborted (see the log)",
    "SIGKILL": "it was killed (out of memory, or MemoryMax)",
    "SIGFPE": "it crashed (arithmetic exception)",
}
# (pattern in the server's log, plain words, hint)
LOG_CAUSES = [
    (r"no kernel image is available", "the CUDA code was built for another GPU architecture",
     "rebuild for this GPU: check `edgekit facts` (GPU arch) or pass --cuda-arch"),
    (r"cuMemAddressReserve|failed to reserve .*virtual", "CUDA's virtual memory pool could not reserve its "
     "address space (common on 8 GB Jetsons)", "rebuild with --cmake-flag -DGGML_CUDA_NO_VMM=ON"),
    (r"libcuda\.so[.0-9]*: cannot open shared object file", "the CUDA driver library (libcuda) is missing",
     "install the Jetson's CUDA driver (JetPack: `sudo apt install nvidia-jetpack`)"),
    (r"NvRmMemInitNvmap.*Permission denied|nvmap.*Permission denied", "the service user may not open the GPU "
     "(/dev/nvmap: Permission denied)", "add the service user to the video and render groups (provision does)"),
    (r"error while loading shared libraries: ([^\s:]+)", "a shared library is missing",
     "install the missing library, or rebuild on this device"),
    (r"CUDA error: out of memory|cudaMalloc failed", "the GPU ran out of memory", "free memory on the device"),
    (r"CUDA error", "a CUDA error stopped it", "read the gate log"),
    (r"GGML_ASSERT", "an assertion in ggml failed", "read the gate log"),
]


@dataclass
class Verdict:
    ok: bool
    reason: str                                 # plain words
    hint: str | None = None
    signal: str | None = None                   # SIGILL, ... when it died of one
    exit_status: int | None = None
    tokens: int = 0
    gpu: dict = field(default_factory=dict)     # {"device": ..., "offloaded": n, "layers": m}
    seconds: float = 0.0
    log: str | None = None                      # where the gate's log is kept on the device

    def to_json(self) -> dict:
        return asdict(self)


class GateRefused(UnsuitableDevice):
    """A build (or a pack) did not pass the gate on this device: nothing switched to it."""

    def __init__(self, message: str, verdict: Verdict, cpu_level: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint or verdict.hint)
        self.verdict = verdict
        self.cpu_level = cpu_level


def unit_name(build_id: str) -> str:
    return "edgekit-gate-" + re.sub(r"[^A-Za-z0-9_.-]", "_", build_id)


def sandbox_properties(unit_text: str, systemd_version: int | None = None) -> list[str]:
    """Pure: the `Key=Value` lines of the rendered unit's [Service] section that the gate applies too (those this
    systemd knows, when its version is given)."""
    props, section = [], None
    for line in unit_text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]" or not line or line.startswith("#") or "=" not in line:
            continue
        key = line.split("=", 1)[0]
        if key in SANDBOX_KEYS and (systemd_version is None or systemd_version >= MIN_SYSTEMD.get(key, 0)):
            props.append(line)
    return props


@dataclass
class GateRun:
    """The exact commands the gate runs for one build (also what the dry run prints)."""

    build_id: str
    bin_dir: str
    gpu: bool
    properties: list[str]
    threads: int = 2

    @property
    def unit(self) -> str:
        return unit_name(self.build_id)

    @property
    def socket(self) -> str:
        return f"/run/{self.unit}/llama.sock"

    @property
    def log(self) -> str:
        return f"{L.LOG_DIR}/gate-{self.build_id}.log"

    def start_command(self) -> str:
        props = [f"RuntimeDirectory={self.unit}", *self.properties]
        argv = ["systemd-run", f"--unit={self.unit}", "--service-type=exec", "--quiet",
                *(f"--property={p}" for p in props), "--", f"{self.bin_dir}/llama-server",
                "--model", GATE_MODEL, "--host", self.socket, "--ctx-size", "256", "--parallel", "1",
                "--threads", str(self.threads), "--n-gpu-layers", "999" if self.gpu else "0", "--no-webui"]
        return " ".join(q(a) for a in argv)

    def poll_command(self) -> str:
        return (f"systemctl show {q(self.unit)} -p ActiveState -p Result -p ExecMainCode -p ExecMainStatus; "
                f"echo \"health=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 --unix-socket "
                f"{q(self.socket)} http://gate/health)\"")

    def completion_command(self) -> str:
        body = json.dumps({"prompt": "Hello", "n_predict": N_PREDICT, "temperature": 0, "ignore_eos": True})
        return (f"curl -s --max-time 120 --unix-socket {q(self.socket)} -H 'Content-Type: application/json' "
                f"-d {q(body)} http://gate/completion")

    def reset_command(self) -> str:
        return f"systemctl stop {q(self.unit)} 2>/dev/null; systemctl reset-failed {q(self.unit)} 2>/dev/null; true"

    def stop_command(self) -> str:
        return (f"mkdir -p {q(L.LOG_DIR)} && journalctl -u {q(self.unit)} -o cat --no-pager > {q(self.log)}; "
                f"systemctl stop {q(self.unit)} 2>/dev/null; systemctl reset-failed {q(self.unit)} 2>/dev/null; "
                f"cat {q(self.log)}")

    def ops(self, model_present: bool, record_in: str | None) -> list[Op]:
        """The gate's operations in the order they run; the verdict goes to `record_in`/gate.json (None: the
        caller records it, e.g. after moving a pack into place)."""
        ops: list[Op] = [] if model_present else [
            sh("install", "-d", "-m", "0755", L.GATE_DIR), Upload(GATE_MODEL, tiny_llama_bytes())]
        ops += [self.reset_command(), self.start_command(),
                Check(f"until /health is 200 or the unit stops: {self.poll_command()}"),
                Check(self.completion_command()), self.stop_command()]
        if record_in:
            ops.append(record_upload(record_in))
        return ops


def record_upload(prefix: str) -> Upload:
    return Upload(f"{prefix}/{L.GATE_NAME}", made_by_run="the verdict, with this machine's id")


def parse_show(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("health="))


def judge(show: dict[str, str], healthy: bool, completion: str | None, log: str, gpu: bool) -> Verdict:
    """Pure: the gate's verdict from the unit's state, whether /health answered, the completion and the log."""
    offload = re.search(r"offloaded (\d+)/(\d+) layers to GPU", log)
    device = re.search(r"(?:Device \d+|using device CUDA\d+)[:\s]+\(?([^\n,()]+)", log)
    gpu_info = {"device": device[1].strip() if device else None,
                "offloaded": int(offload[1]) if offload else None, "layers": int(offload[2]) if offload else None}
    code, status = show.get("ExecMainCode"), show.get("ExecMainStatus")
    died = code in ("2", "3") or show.get("Result") in ("signal", "core-dump")
    if died and status and status.isdecimal():
        try:
            name = signal.Signals(int(status)).name
        except ValueError:
            name = f"signal {status}"
        words = SIGNAL_WORDS.get(name, "it was killed by a signal")
        hint = None
        if name == "SIGILL":
            hint = "build for a lower CPU level, e.g. --cpu-level x86-64-v3 (the levels: edgekit/facts/isa.py)"
        return Verdict(False, f"llama-server died of {name}: {words}", hint, signal=name, gpu=gpu_info)
    for pattern, words, hint in LOG_CAUSES:
        m = re.search(pattern, log)
        if m and (not healthy or not completion):
            extra = f" ({m[1]})" if m.groups() else ""
            return Verdict(False, f"llama-server failed: {words}{extra}", hint, gpu=gpu_info,
                           exit_status=int(status) if status and status.isdecimal() else None)
    if not healthy:
        state = show.get("ActiveState") or "unknown"
        exit_note = f", exit status {status}" if status and status != "0" else ""
        return Verdict(False, f"llama-server did not become healthy (unit {state}{exit_note})",
                       "read the gate log", gpu=gpu_info,
                       exit_status=int(status) if status and status.isdecimal() else None)
    try:
        tokens = int(json.loads(completion or "")["tokens_predicted"])
    except (ValueError, KeyError, TypeError):
        return Verdict(False, f"llama-server answered /health but not a completion: {(completion or '')[:120]!r}",
                       "read the gate log", gpu=gpu_info)
    if tokens < 1:
        return Verdict(False, "llama-server generated no tokens", "read the gate log", gpu=gpu_info)
    if gpu and not (offload and offload[1] == offload[2] and int(offload[2]) > 0):
        seen = f"{offload[1]}/{offload[2]} layers" if offload else "no 'offloaded N/N layers to GPU' line"
        return Verdict(False, f"the CUDA build did not run on the GPU ({seen})",
                       "check the CUDA driver and that the service user is in the video/render groups",
                       tokens=tokens, gpu=gpu_info)
    where = f" on {gpu_info['device'] or 'the GPU'} ({offload[1]}/{offload[2]} layers)" if gpu else " on the CPU"
    return Verdict(True, f"generated {tokens} tokens{where}", tokens=tokens, gpu=gpu_info)


def run_gate(ctx, run: GateRun, ops: list[Op], build_id: str, timeout: float = 120.0) -> Verdict:
    """Run the gate's ops (GateRun.ops): start the build's llama-server in the unit's sandbox, ask for tokens, stop
    it (also on Ctrl-C), record the verdict when the ops say where. Returns the verdict (not raised)."""
    start = time.monotonic()
    started, show, healthy, completion, log = None, {}, False, None, ""
    try:
        for op in ops:
            if op == run.stop_command():
                break
            if isinstance(op, Upload) and op.made_by_run:
                continue
            if op == run.start_command():
                started = ctx.do(op, check=False)
                if not started.ok:
                    break
            elif isinstance(op, Check) and run.poll_command() in op.text:
                while time.monotonic() - start < timeout:
                    out = ctx.read(run.poll_command()).stdout
                    show = parse_show(out)
                    if "health=200" in out:
                        healthy = True
                        break
                    if show.get("ActiveState") in ("failed", "inactive"):
                        break
                    ctx.progress(f"gate: waiting for the test server ({time.monotonic() - start:.0f}s)")
                    time.sleep(0.5)
            elif isinstance(op, Check):
                completion = ctx.read(op.text).stdout if healthy else None
            else:
                ctx.do(op)
    finally:                            # also on Ctrl-C: never leave the test server running
        log = ctx.do(run.stop_command(), check=False).stdout
    if started is not None and not started.ok:
        log = (started.stdout + started.stderr) + log
        show = {"ActiveState": "not started"}
    verdict = judge(show, healthy, completion, log, run.gpu)
    verdict.seconds = round(time.monotonic() - start, 2)
    verdict.log = run.log
    if not verdict.ok and not healthy and "did not become healthy" in verdict.reason:
        tail = "\n".join(log.strip().splitlines()[-3:])
        if tail:
            verdict.reason += f"; last lines: {tail}"
    record = next((op for op in ops if isinstance(op, Upload) and op.made_by_run), None)
    if record is not None:
        ctx.do(record.with_text(record_text(ctx, verdict, build_id)))
    return verdict


def record_text(ctx, verdict: Verdict, build_id: str) -> str:
    """gate.json: the verdict with this device's machine-id (a pack's record from elsewhere does not count)."""
    machine = ctx.read("cat /etc/machine-id", sudo=False).stdout.strip()
    data = {"build": build_id, "machine_id": machine, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **verdict.to_json()}
    return json.dumps(data, indent=2) + "\n"
