"""Run llama-bench on the device with the served model, threads and GPU layers, and parse its JSON.

The settings come from the running llama-server's own command line (/proc/PID/cmdline) and llama-bench is
taken from the same bin/ directory as that server, so both numbers come from one build.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from edgekit.errors import EdgekitError, RemoteCommandFailed

SERVER_NAME = "llama-server"


@dataclass
class ServerProcess:
    pid: int
    exe: str
    model: Optional[str]
    threads: Optional[int]
    n_gpu_layers: Optional[str]
    parallel: Optional[int]
    ctx_size: Optional[int]
    port: Optional[int] = None
    args: List[str] = field(default_factory=list)

    @property
    def bench_exe(self) -> str:
        return os.path.join(os.path.dirname(self.exe), "llama-bench")


# llama-server also reads every setting from LLAMA_ARG_* variables (edgekit's service passes them that way);
# a command-line flag wins over the variable, as in llama.cpp.
_ENV = {"model": "LLAMA_ARG_MODEL", "threads": "LLAMA_ARG_THREADS", "ngl": "LLAMA_ARG_N_GPU_LAYERS",
        "parallel": "LLAMA_ARG_N_PARALLEL", "ctx": "LLAMA_ARG_CTX_SIZE", "port": "LLAMA_ARG_PORT"}
_FLAGS = {"model": ("-m", "--model"), "threads": ("-t", "--threads"), "ngl": ("-ngl", "--gpu-layers",
          "--n-gpu-layers"), "parallel": ("-np", "--parallel"), "ctx": ("-c", "--ctx-size"), "port": ("--port",)}


def parse_server_cmdline(pid: int, exe: str, cmdline: str, environ: str = "") -> ServerProcess:
    """Pure: NUL-separated /proc/PID/cmdline (and environ) of llama-server -> its model, threads, ngl, parallel, ctx."""
    args = [a for a in cmdline.split("\0") if a != ""]
    env = dict(v.split("=", 1) for v in environ.split("\0") if "=" in v)
    found: Dict[str, str] = {name: env[var] for name, var in _ENV.items() if env.get(var)}
    for i, arg in enumerate(args):
        key, _, inline = arg.partition("=")
        for name, flags in _FLAGS.items():
            if key in flags:
                value = inline if inline else (args[i + 1] if i + 1 < len(args) else "")
                found[name] = value
    if not exe and args and args[0].startswith("/"):
        exe = args[0]          # /proc/PID/exe is unreadable for another user's process; argv[0] is the path
    return ServerProcess(pid=pid, exe=exe, model=found.get("model"),
                         threads=int(found["threads"]) if found.get("threads", "").lstrip("-").isdigit() else None,
                         n_gpu_layers=found.get("ngl"),
                         parallel=int(found["parallel"]) if found.get("parallel", "").isdigit() else None,
                         ctx_size=int(found["ctx"]) if found.get("ctx", "").isdigit() else None,
                         port=int(found["port"]) if found.get("port", "").isdigit() else None, args=args)


def find_server(transport, port: Optional[int] = None) -> ServerProcess:
    """The llama-server process listening on `port` (by its --port flag; 8080 when absent), else the oldest."""
    script = (f"for pid in $(pgrep -x {SERVER_NAME}); do printf '@@pid %s\\n' $pid; "
              "readlink /proc/$pid/exe 2>/dev/null || echo; cat /proc/$pid/cmdline; echo; "
              "printf '@@env\\n'; sudo -n cat /proc/$pid/environ 2>/dev/null || cat /proc/$pid/environ 2>/dev/null; "
              "echo; done")
    res = transport.run(script, check=False)
    procs = []
    for chunk in res.stdout.split("@@pid ")[1:]:
        head, _, rest = chunk.partition("\n")
        exe, _, rest = rest.partition("\n")
        cmdline, _, environ = rest.partition("@@env\n")
        if head.strip().isdigit():
            procs.append(parse_server_cmdline(int(head), exe.strip(), cmdline.rstrip("\n"), environ.rstrip("\n")))
    if not procs:
        raise EdgekitError(f"no {SERVER_NAME} process on {transport.name}: cannot run llama-bench with its settings",
                           hint="start the server (edgekit provision, or systemctl start edgekit-llama-server), "
                                "or leave out --llama-bench")
    if port is not None:
        matching = [p for p in procs if (p.port or 8080) == port]
        if not matching:
            raise EdgekitError(f"no {SERVER_NAME} on {transport.name} listens on port {port} "
                               f"(found ports {', '.join(str(p.port or 8080) for p in procs)})",
                               hint="check --url, or leave out --llama-bench")
        procs = matching
    return min(procs, key=lambda p: p.pid)


def command(server: ServerProcess, pp: int, tg: int, reps: int) -> str:
    """The llama-bench command line matching the server's model, threads and GPU layers."""
    if not server.model:
        raise EdgekitError("cannot tell which model the running llama-server uses (no -m/--model)",
                           hint="run llama-server with -m MODEL.gguf")
    parts = [server.bench_exe, "-m", server.model, "-p", str(pp), "-n", str(tg), "-r", str(reps), "-o", "json"]
    if server.threads:
        parts += ["-t", str(server.threads)]
    if server.n_gpu_layers not in (None, "", "auto", "all"):
        parts += ["-ngl", str(server.n_gpu_layers)]
    elif server.n_gpu_layers in ("auto", "all"):
        parts += ["-ngl", "99"]
    return " ".join(shlex.quote(p) for p in parts)


def parse_json(text: str) -> Dict[str, Dict[str, Any]]:
    """Pure: llama-bench -o json -> {'pp512': {...}, 'tg128': {...}} with avg/stddev t/s and build info."""
    start = text.find("[")
    if start < 0:
        raise ValueError("no JSON array in llama-bench output")
    rows = json.loads(text[start:text.rindex("]") + 1])
    out: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        n_prompt, n_gen = int(row.get("n_prompt", 0)), int(row.get("n_gen", 0))
        test = f"pp{n_prompt}" if n_gen == 0 else (f"tg{n_gen}" if n_prompt == 0 else f"pp{n_prompt}+tg{n_gen}")
        out[test] = {"avg_ts": row["avg_ts"], "stddev_ts": row.get("stddev_ts"), "samples_ts": row.get("samples_ts"),
                     "n_threads": row.get("n_threads"), "n_gpu_layers": row.get("n_gpu_layers"),
                     "build_commit": row.get("build_commit"), "build_number": row.get("build_number"),
                     "backends": row.get("backends"), "model_size": row.get("model_size"),
                     "model_type": row.get("model_type"), "cpu_info": row.get("cpu_info"),
                     "gpu_info": row.get("gpu_info")}
    return out


def run(transport, server: ServerProcess, pp: int, tg: int, reps: int, timeout: float = 1800) -> Dict[str, Any]:
    """Run llama-bench on the device; return {'command', 'results'}."""
    cmd = command(server, pp, tg, reps)
    try:
        res = transport.run(cmd, timeout=timeout)
    except RemoteCommandFailed as e:
        raise EdgekitError(f"llama-bench failed on {transport.name}: {e.message}",
                           hint=f"check that {server.bench_exe} exists (built with LLAMA_BUILD_TOOLS)") from None
    return {"command": cmd, "results": parse_json(res.stdout)}
