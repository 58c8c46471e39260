"""The exporter's steps: ExporterPortFree (before any change) and ExporterInstalled (its zipapp, its bearer token
0600 on the device and the controller, its unit, enabled and active).

ExporterInstalled runs after the service is up and recorded healthy (outside the deploy gate: a failing
exporter never rolls llama-server back), as the service user, which can read llama-server's key. A no-op when
the zipapp has the right sha256, the token is 0600 and the service user's, the unit is as rendered, and the unit
is enabled and active. After a start it checks, on the device, that /metrics answers 200 with the token.

Port 9838: Prometheus' exporter range 9100-9999 is fully allocated (its wiki's port list), so no free
conventional port exists; 9838 stays clear of what runs on a Jetson LLM box (9100 node_exporter, 9400
dcgm-exporter, 9835 nvidia_gpu_exporter, 9090 Prometheus, 8080 llama-server), and a port held by another
program is refused before any change.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from edgekit import layout as L
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice
from edgekit.exporter.app import DEFAULT_PORT, is_loopback
from edgekit.facts.deployed import FileOwnerMode, FileSha256, FileText, UnitState
from edgekit.metrics import bundle, tokens
from edgekit.remote.command import Check, Local, Upload, q, sh
from edgekit.remote.plan import Change, Context, Noop
from edgekit.service.steps import port_held, probe_host
from edgekit.service.settings import render

# The exporter's place on the device (edgekit.layout), by the names this module's callers use.
EXPORTER_DIR, EXPORTER_PYZ, EXPORTER_TOKEN = L.EXPORTER_DIR, L.EXPORTER_PYZ, L.EXPORTER_TOKEN
EXPORTER_UNIT, EXPORTER_UNIT_PATH = L.EXPORTER_UNIT, L.EXPORTER_UNIT_PATH
JTOP_GROUP = "jtop"
USER = L.SERVICE_USER


@dataclass
class ExporterOptions:
    """Where the exporter listens and how it is reached: a bearer token, or no token on loopback only."""

    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"
    token: bool = True
    interval_s: float = 5.0           # seconds between board samples (Prometheus scrapes every 5 s by default)
    memory_max: str = "96M"
    cpu_quota: str = "25%"


@dataclass(frozen=True)
class JtopGroup:
    """['jtop'] when the device has jetson-stats' group (its socket's), else []."""

    sudo: bool = False

    @property
    def command(self) -> str:
        return f"getent group {JTOP_GROUP} | cut -d: -f1"

    @staticmethod
    def parse(output: str) -> list[str]:
        return [g for g in output.split() if g == JTOP_GROUP]


def exporter_variables(options: ExporterOptions, groups: list[str]) -> dict:
    """The template variables of edgekit-exporter.service.j2 (edgekit_ prefixed: the Ansible role shares it)."""
    return {
        "edgekit_exporter_python": "/usr/bin/python3", "edgekit_exporter_pyz": EXPORTER_PYZ,
        "edgekit_exporter_host": options.host, "edgekit_exporter_port": int(options.port),
        "edgekit_exporter_token_file": EXPORTER_TOKEN if options.token else None,
        "edgekit_exporter_interval": f"{options.interval_s:g}", "edgekit_exporter_groups": list(groups),
        "edgekit_exporter_memory_max": options.memory_max, "edgekit_exporter_cpu_quota": options.cpu_quota,
    }


def render_exporter_unit(options: ExporterOptions, groups: list[str]) -> str:
    return render("edgekit-exporter.service.j2", exporter_variables(options, groups))


# The unit as rendered for the default deployment (a Jetson with jetson-stats); systemd/ holds exactly this.
EXAMPLE = (ExporterOptions(), [JTOP_GROUP])


def check_url(options: ExporterOptions) -> str:
    """Where /metrics is reached from the device itself."""
    return f"http://{probe_host(options.host)}:{int(options.port)}/metrics"


def poll_command(url: str, token_file: str | None, seconds: int = 20) -> str:
    """Prints the last HTTP status of GET url (the token read from its file on the device) within `seconds`."""
    code = ("import sys,time,urllib.request as u,urllib.error as e\n"
            "h={'Authorization':'Bearer '+open(sys.argv[2]).read().strip()} if sys.argv[2] else {}\n"
            "s=0\n"
            "for _ in range(int(sys.argv[3])):\n"
            " try:\n  s=u.urlopen(u.Request(sys.argv[1],headers=h),timeout=5).status\n"
            " except e.HTTPError as x:\n  s=x.code\n"
            " except Exception:\n  s=0\n"
            " if s==200:\n  break\n"
            " time.sleep(1)\n"
            "print(s)\n")
    return sh("python3", "-I", "-c", code, url, token_file or "", seconds)


def _refuse_unless_it_can_listen(ctx: Context, o: ExporterOptions) -> str:
    """What holds the exporter's port (free, or its own unit); raises when it would serve without a token off
    loopback, or when another program holds its port."""
    if not o.token and not is_loopback(o.host):
        raise UnsuitableDevice(f"the exporter would serve {o.host}:{o.port} without a token",
                               hint="keep the token (the default), or bind the exporter to 127.0.0.1")
    return port_held(ctx, o.port, EXPORTER_UNIT, "choose another with --metrics-port")


class ExporterPortFree:
    """Before any change: the exporter's port is free or already its own, and no token means loopback only."""

    name = "metrics port"

    def __init__(self, options: ExporterOptions | None = None):
        self.options = options or ExporterOptions()

    def plan(self, ctx: Context):
        return Noop(_refuse_unless_it_can_listen(ctx, self.options))


class ExporterInstalled:
    """The metrics exporter installed, its token in place, its unit enabled and active, /metrics answering."""

    name = "metrics exporter"

    def __init__(self, options: ExporterOptions | None = None):
        self.options = options or ExporterOptions()

    def plan(self, ctx: Context):
        o, target = self.options, ctx.transport.name
        _refuse_unless_it_can_listen(ctx, o)                # checked again: facts are re-read before a change
        show = ctx.fact(UnitState(EXPORTER_UNIT))
        main_pid = show.get("MainPID") or "0"
        ops: list = []
        changed: list[str] = []
        digest = bundle.sha256()
        if ctx.fact(FileSha256(EXPORTER_PYZ)) != digest:
            ops += [sh("install", "-d", "-m", "0755", EXPORTER_DIR), Upload(EXPORTER_PYZ, bundle.build(), mode="0644")]
            changed.append("exporter")
        token, keep = None, False
        if o.token:
            owner_mode = ctx.fact(FileOwnerMode(EXPORTER_TOKEN))
            device = (ctx.fact(FileText(EXPORTER_TOKEN)) or "").strip() if owner_mode else ""
            if owner_mode == (USER, "600") and device:
                keep = tokens.read_token(target) != device         # the controller's copy, for Prometheus
                token = device
            else:
                # a token that is there with the wrong owner or mode is kept (Prometheus may hold it); else a new one
                token = device or tokens.read_token(target) or tokens.new_token()
                ops += [sh("install", "-d", "-m", "0755", L.ETC_DIR),
                        Upload(EXPORTER_TOKEN, token + "\n", mode="0600", owner=USER, group=USER, secret=True)]
                changed.append("token")
                keep = True
            if keep:
                ops.append(Local(f"keep a copy in {tokens.token_path(target)} (0600)"))
        want = render_exporter_unit(o, ctx.fact(JtopGroup()))
        have = ctx.fact(FileText(EXPORTER_UNIT_PATH))
        if have != want:
            ops += [Upload(EXPORTER_UNIT_PATH, want), "systemctl daemon-reload"]
            changed.append("unit")
        enabled = show.get("UnitFileState") == "enabled"
        active = show.get("ActiveState") == "active"
        if not enabled:
            ops.append(f"systemctl enable {EXPORTER_UNIT}")
        restart = bool(changed) or not active
        if restart:
            poll = poll_command(check_url(o), EXPORTER_TOKEN if o.token else None)
            ops += [f"systemctl restart {EXPORTER_UNIT}", Check(f"/metrics answers 200 within 20 s: {poll}")]
        if not ops:
            return Noop(f"{EXPORTER_UNIT} active (PID {main_pid}) on {o.host}:{o.port}, "
                        f"{'bearer token' if o.token else 'no token, loopback only'}, exporter {digest[:12]}")
        if not [op for op in ops if not isinstance(op, Local)]:          # only the controller's copy is missing
            if not ctx.dry_run:
                tokens.save_token(target, token or "")
            return Noop(f"{EXPORTER_UNIT} active (PID {main_pid}); token copied to the controller")
        why = ", ".join(changed) if changed else ("not active" if not active else "not enabled")
        summary = f"{'restart' if active and restart else 'start' if restart else 'enable'} {EXPORTER_UNIT} ({why})"
        diff = "".join(difflib.unified_diff((have or "").splitlines(True), want.splitlines(True),
                                            EXPORTER_UNIT_PATH, EXPORTER_UNIT_PATH))

        def apply(c: Context) -> None:
            for op in ops:
                if isinstance(op, Local):
                    tokens.save_token(target, token or "")
                elif isinstance(op, Check):
                    self._wait_answering(c)
                else:
                    c.do(op)

        return Change(summary, ops, apply, detail={"diff": diff} if diff else {})

    def _wait_answering(self, ctx: Context) -> None:
        o = self.options
        status = ctx.read(poll_command(check_url(o), EXPORTER_TOKEN if o.token else None)).stdout.strip() \
            .splitlines()[-1:] or ["0"]
        if status[0] != "200":
            logs = ctx.read(f"journalctl -u {q(EXPORTER_UNIT)} -n 25 --no-pager -o cat").stdout
            raise RemoteCommandFailed(f"GET {check_url(o)}", int(status[0]) if status[0].isdecimal() else 1, logs,
                                      message=f"{EXPORTER_UNIT} did not answer /metrics with 200 "
                                              f"(last status {status[0]})",
                                      hint="the exporter's journal is above: fix what it says, then run "
                                           f"`edgekit provision {ctx.transport.name}` again")
