"""Run llama-bench on the device with the served model, threads and GPU layers, and parse its JSON.

Only edgekit's own service is benchmarked this way: its process is the unit's MainPID (systemd says which), its
build is the one `current` points to under the install root (resolved and checked to be there), and llama-bench
is taken from that build, so both numbers come from one build. Nothing is taken from another process's
argv[0] or /proc/PID/exe: any local user can start a `llama-server` from any directory. The settings come from
the service's process environment (edgekit passes them as LLAMA_ARG_* variables), read with sudo.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from edgekit import layout
from edgekit.bench.pinning import taskset
from edgekit.errors import EdgekitError, RemoteCommandFailed
from edgekit.remote.command import q, sh
from edgekit.service.steps import unit_properties

SERVER_NAME = "llama-server"
DEFAULT_PORT = 8080                      # llama-server's own default
_BUILD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass
class ServerProcess:
    pid: int
    prefix: str                          # the build's install directory, checked to be under the install root
    model: Optional[str]
    threads: Optional[int]
    n_gpu_layers: Optional[str]
    parallel: Optional[int]
    ctx_size: Optional[int]
    port: Optional[int] = None
    args: List[str] = field(default_factory=list)
    batch: Optional[int] = None          # -b / LLAMA_ARG_BATCH (None: llama.cpp's default)
    ubatch: Optional[int] = None         # -ub / LLAMA_ARG_UBATCH

    # the files of this build: its server, its llama-bench, its stamp
    exe = property(lambda self: f"{self.prefix}/bin/{SERVER_NAME}")
    bench_exe = property(lambda self: f"{self.prefix}/bin/llama-bench")
    stamp_path = property(lambda self: f"{self.prefix}/{layout.STAMP_NAME}")


def install_prefix(resolved: str) -> str:
    """Pure: the resolved target of `current` if it is a build directory directly under the install root."""
    path = resolved.strip()
    parent, name = posixpath.split(path)
    if (not path.startswith("/") or posixpath.normpath(path) != path or parent != layout.INSTALL_ROOT
            or not _BUILD_NAME.fullmatch(name) or name in ("current", "previous")):
        raise EdgekitError(f"{layout.CURRENT} resolves to {path!r}, not to a build under {layout.INSTALL_ROOT}",
                           hint="run `edgekit provision TARGET` to install a build, or leave out --llama-bench")
    return path


# llama-server also reads every setting from LLAMA_ARG_* variables (edgekit's service passes them that way);
# a command-line flag wins over the variable, as in llama.cpp.
_ENV = {"model": "LLAMA_ARG_MODEL", "threads": "LLAMA_ARG_THREADS", "ngl": "LLAMA_ARG_N_GPU_LAYERS",
        "parallel": "LLAMA_ARG_N_PARALLEL", "ctx": "LLAMA_ARG_CTX_SIZE", "port": "LLAMA_ARG_PORT",
        "batch": "LLAMA_ARG_BATCH", "ubatch": "LLAMA_ARG_UBATCH"}
_FLAGS = {"model": ("-m", "--model"), "threads": ("-t", "--threads"), "ngl": ("-ngl", "--gpu-layers",
          "--n-gpu-layers"), "parallel": ("-np", "--parallel"), "ctx": ("-c", "--ctx-size"), "port": ("--port",),
          "batch": ("-b", "--batch-size"), "ubatch": ("-ub", "--ubatch-size")}


def parse_server_cmdline(pid: int, prefix: str, cmdline: str, environ: str = "") -> ServerProcess:
    """Pure: NUL-separated /proc/PID/cmdline (and environ) of llama-server -> its model, threads, ngl, parallel, ctx.

    `prefix` is the build directory the caller found under the install root; argv[0] is never used as a path."""
    args = [a for a in cmdline.split("\0") if a != ""]
    env = dict(v.split("=", 1) for v in environ.split("\0") if "=" in v)
    found: Dict[str, str] = {name: env[var] for name, var in _ENV.items() if env.get(var)}
    for i, arg in enumerate(args[1:], start=1):
        key, _, inline = arg.partition("=")
        for name, flags in _FLAGS.items():
            if key in flags:
                value = inline if inline else (args[i + 1] if i + 1 < len(args) else "")
                found[name] = value

    def number(name: str) -> Optional[int]:
        return int(found[name]) if found.get(name, "").isdecimal() else None

    return ServerProcess(pid=pid, prefix=prefix, model=found.get("model"),
                         threads=int(found["threads"]) if found.get("threads", "").lstrip("-").isdecimal() else None,
                         n_gpu_layers=found.get("ngl"), parallel=number("parallel"), ctx_size=number("ctx"),
                         port=number("port"), args=args, batch=number("batch"), ubatch=number("ubatch"))


# What the running server actually uses, read from the device: the threads it logged at start, when its log says
# (`system_info: n_threads = 8 (n_threads_batch = 8) / 8 | ...`, or older builds' `system info: n_threads = 8,
# n_threads_batch = 8, total_threads = 8`; b11312 prints it only at trace verbosity), else llama.cpp's default when
# no thread count is set: one thread per physical core, counted as common_cpu_get_num_math does on Linux (the
# distinct /sys/devices/system/cpu/cpuN/topology/thread_siblings, cpu0 up to the first missing one; hybrid x86
# CPUs, which it counts otherwise, are not Jetsons); and the CPUs the kernel lets it run on.
_SYSTEM_INFO = re.compile(r"system[_ ]info: n_threads = ([0-9]+)(?: \(n_threads_batch = ([0-9]+)\)|, n_threads_batch = ([0-9]+))")
_CPUS_ALLOWED = re.compile(r"^Cpus_allowed_list:\s*(\S+)\s*$", re.M)
_SIBLINGS = "/sys/devices/system/cpu/cpu$i/topology/thread_siblings"


def runtime_command(pid: int) -> str:
    """The fact's command (run with sudo: the journal of a system unit): the server's CPU affinity, the threads line
    it logged when this process started, and the cores' thread siblings (llama.cpp's default thread count)."""
    return (f"grep '^Cpus_allowed_list:' /proc/{int(pid)}/status; echo @@journal; "
            f"journalctl _PID={int(pid)} -o cat --no-pager 2>/dev/null | grep -m1 -E 'system[_ ]info: n_threads'; "
            f"echo @@siblings; i=0; while [ -r {_SIBLINGS} ]; do cat {_SIBLINGS}; i=$((i+1)); done; true")


def parse_runtime(text: str) -> Dict[str, Any]:
    """Pure: runtime_command's output -> {"threads", "threads_batch" (its log), "default_threads" (physical
    cores), "cpus"}: None where the device did not say."""
    status, _, rest = text.partition("@@journal")
    journal, _, siblings = rest.partition("@@siblings")
    cpus = _CPUS_ALLOWED.search(status)
    info = _SYSTEM_INFO.search(journal)
    cores = {line.strip() for line in siblings.splitlines() if line.strip()}
    return {"threads": int(info.group(1)) if info else None,
            "threads_batch": int(info.group(2) or info.group(3)) if info else None,
            "default_threads": len(cores) or None,
            "cpus": cpus.group(1) if cpus else None}


def recorded_settings(server: ServerProcess, runtime: Dict[str, Any]) -> Dict[str, Any]:
    """Pure: the server's settings as recorded for a report, each with where it was read: its own setting, else
    its log, else llama.cpp's default (one thread per physical core: `default`)."""
    for threads, source in ((server.threads, "setting"), (runtime.get("threads"), "log"),
                            (runtime.get("default_threads"), "default")):
        if threads:
            break
    else:
        threads, source = None, None
    return {"threads": threads, "threads_from": source, "threads_batch": runtime.get("threads_batch"),
            "batch": server.batch, "ubatch": server.ubatch, "cpus": runtime.get("cpus"),
            "n_gpu_layers": server.n_gpu_layers, "model": server.model}


def read_runtime(transport, server: ServerProcess) -> Dict[str, Any]:
    """The fact: the running server's threads (its log) and CPU affinity (/proc), read with the transport's sudo."""
    return parse_runtime(transport.sudo(runtime_command(server.pid), check=False).stdout)


def env_file_environ(text: str) -> str:
    """Pure: the service's EnvironmentFile (KEY=VALUE lines, # comments) as a NUL-separated environ."""
    lines = (line.strip() for line in text.splitlines())
    return "\0".join(line for line in lines if line and not line.startswith("#") and "=" in line)


def _probe_command(pid: int) -> str:
    return (f"readlink -f {q(layout.CURRENT)}; echo @@cmdline; cat /proc/{int(pid)}/cmdline; echo; "
            f"echo @@env; cat {q(layout.ENV_PATH)} 2>/dev/null")


def parse_probe(pid: int, text: str) -> ServerProcess:
    """Pure: the output of the probe -> the service's process (build checked to be under the install root).

    Its settings come from the env file here (readable without sudo); `read_settings` replaces them with the
    running process's own environment."""
    head, _, rest = text.partition("@@cmdline\n")
    cmdline, _, env_file = rest.partition("@@env\n")
    return parse_server_cmdline(pid, install_prefix(head), cmdline.rstrip("\n"), env_file_environ(env_file))


def find_server(transport) -> ServerProcess:
    """edgekit's llama-server on the device: the unit's main process and the build `current` points to."""
    main_pid = unit_properties(transport).get("MainPID", "").strip()
    if not main_pid.isdecimal() or int(main_pid) == 0:
        raise EdgekitError(f"{layout.UNIT_NAME} is not running on {transport.name}",
                           hint="start it with `edgekit provision TARGET`, or leave out --llama-bench")
    pid = int(main_pid)
    res = transport.run(_probe_command(pid), check=False)
    return parse_probe(pid, res.stdout)


def read_settings(transport, server: ServerProcess) -> ServerProcess:
    """The service's running settings from its process environment (root-only: read with the transport's sudo),
    after checking that the process runs the build `current` points to."""
    res = transport.sudo(f"readlink -f /proc/{int(server.pid)}/exe; echo @@env; cat /proc/{int(server.pid)}/environ",
                         check=False)
    exe, _, environ = res.stdout.partition("@@env\n")
    if exe.strip() != server.exe:
        raise EdgekitError(f"{layout.UNIT_NAME} (PID {server.pid}) runs {exe.strip() or 'an unreadable binary'}, "
                           f"not {server.exe} ({layout.CURRENT})",
                           hint=f"restart it (sudo systemctl restart {layout.UNIT_NAME}), or leave out --llama-bench")
    cmdline = "\0".join(server.args)
    return parse_server_cmdline(server.pid, server.prefix, cmdline, environ.rstrip("\n"))


def not_served_by(server: ServerProcess, port: int, model_path: Optional[str]) -> Optional[str]:
    """Pure: why the llama-server at `port` (serving `model_path`, from its /props) is not this process; None
    when it is."""
    own = server.port or DEFAULT_PORT
    if port != own:
        return f"the URL's port is {port}, {layout.UNIT_NAME} listens on {own}"
    if model_path and server.model and model_path != server.model:
        return f"it serves {model_path}, {layout.UNIT_NAME} serves {server.model}"
    return None


def command(server: ServerProcess, pp: int, tg: int, reps: int, cpus: Optional[List[int]] = None) -> str:
    """The llama-bench command line matching the server's model, threads and GPU layers (on `cpus` when given,
    the ones the server is pinned to)."""
    install_prefix(server.prefix)
    if not server.model:
        raise EdgekitError("cannot tell which model the running llama-server uses (no -m/--model)",
                           hint="run llama-server with -m MODEL.gguf")
    parts = [server.bench_exe, "-m", server.model, "-p", str(pp), "-n", str(tg), "-r", str(reps), "-o", "json"]
    if server.threads:
        parts += ["-t", str(server.threads)]
    if server.batch:
        parts += ["-b", str(server.batch)]
    if server.ubatch:
        parts += ["-ub", str(server.ubatch)]
    if server.n_gpu_layers not in (None, "", "auto", "all"):
        parts += ["-ngl", str(server.n_gpu_layers)]
    elif server.n_gpu_layers in ("auto", "all"):
        parts += ["-ngl", "99"]
    return taskset(sh(*parts), cpus)


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
                     "n_batch": row.get("n_batch"), "n_ubatch": row.get("n_ubatch"), "cpu_mask": row.get("cpu_mask"),
                     "build_commit": row.get("build_commit"), "build_number": row.get("build_number"),
                     "backends": row.get("backends"), "model_size": row.get("model_size"),
                     "model_type": row.get("model_type"), "cpu_info": row.get("cpu_info"),
                     "gpu_info": row.get("gpu_info")}
    return out


def run(transport, server: ServerProcess, pp: int, tg: int, reps: int, timeout: float = 1800,
        cpus: Optional[List[int]] = None) -> Dict[str, Any]:
    """Run llama-bench on the device; return {'command', 'results'}."""
    cmd = command(server, pp, tg, reps, cpus)
    try:
        res = transport.run(cmd, timeout=timeout)
    except RemoteCommandFailed as e:
        raise EdgekitError(f"llama-bench failed on {transport.name}: {e.message}",
                           hint=f"check that {server.bench_exe} exists (built with LLAMA_BUILD_TOOLS)") from None
    return {"command": cmd, "results": parse_json(res.stdout)}
