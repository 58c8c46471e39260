"""Stand-in devices: a systemd-nspawn container (systemd as PID 1, real sshd) in its own network namespace.

Each stand-in gets 10.77.N.0/24: the host side of the veth is 10.77.N.1, the device 10.77.N.2. Its root is a
tmpfs unpacked from the cached rootfs tarball, so `up` takes seconds and `down` leaves nothing behind.
A supervisor loop restarts the container when it reboots (systemd-nspawn exits 133 on reboot).

`--arch arm64` boots an aarch64 Debian under qemu-user emulation (edgekit.sandbox.emulation registers it with
binfmt_misc); with a Jetson profile it also sees the board's /proc/cpuinfo (docs/aarch64-standin.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit import paths
from edgekit.errors import UsageError
from edgekit.remote.command import q, sh
from edgekit.sandbox import emulation, identity, rootfs

LOGIN_USER = "jetson"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")


@dataclass
class StandIn:
    name: str
    index: int
    jetson: str | None
    state_dir: str
    suite: str = rootfs.SUITE       # the Debian release of its rootfs (rootfs.SUITES)
    arch: str = "amd64"             # Debian's name; one that is not this machine's runs under qemu-user

    flavor = property(lambda s: rootfs.Flavor(s.suite, s.arch))

    # Its network (10.77.N.0/24 in the namespace ek-NAME) and the files in its state directory.
    address = property(lambda s: f"10.77.{s.index}.2", doc="the device side of the veth")
    host_address = property(lambda s: f"10.77.{s.index}.1", doc="this machine's side of the veth")
    netns = property(lambda s: f"ek-{s.name}")
    dir = property(lambda s: Path(s.state_dir))
    key = property(lambda s: s.dir / "id_ed25519", doc="the private key every login user accepts")
    ssh_config = property(lambda s: s.dir / "ssh_config")
    known_hosts = property(lambda s: s.dir / "known_hosts")

    def running(self) -> bool:
        pid = _read_pid(self.dir / "supervisor.pid")
        return pid is not None and _alive(pid)

    def ssh_ready(self, timeout: float = 0.5) -> bool:
        try:
            with socket.create_connection((self.address, 22), timeout=timeout) as s:
                s.settimeout(timeout)
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def describe(self) -> dict:
        return {**asdict(self), "address": self.address, "host_address": self.host_address,
                "user": LOGIN_USER, "key": str(self.key), "ssh_config": str(self.ssh_config),
                "running": self.running(), "ssh": self.ssh_ready()}


def run_dir() -> Path:
    path = Path(os.environ.get("EDGEKIT_SANDBOX_RUN", "/run/edgekit/sandbox"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_ccache_dir() -> Path:
    path = rootfs.cache_dir() / "ccache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_standins() -> list[StandIn]:
    out = []
    for state in sorted(run_dir().glob("*/state.json")):
        try:
            out.append(StandIn(**json.loads(state.read_text())))
        except (ValueError, TypeError):
            continue
    return out


def get(name: str) -> StandIn | None:
    return next((s for s in list_standins() if s.name == name), None)


def _preflight() -> None:
    if os.geteuid() != 0:
        raise UsageError("stand-in devices need root (network namespaces, systemd-nspawn)",
                         hint="run `sudo edgekit sandbox up`")
    missing = [t for t in ("systemd-nspawn", "debootstrap", "zstd", "ip", "ssh-keygen") if not shutil.which(t)]
    if missing:
        raise UsageError(f"missing tools for stand-in devices: {', '.join(missing)}",
                         hint="apt-get install systemd-container debootstrap zstd iproute2 openssh-client")


def up(name: str = "standin1", jetson: str | None = None, log=lambda msg: None, suite: str = rootfs.SUITE,
       arch: str | None = None) -> StandIn:
    """Create and boot a stand-in device (idempotent: a running one is returned as it is). `arch`: Debian's
    architecture name, None for this machine's; another boots under qemu-user emulation."""
    if not NAME_RE.match(name):
        raise UsageError(f"bad stand-in name {name!r}", hint="use 1-12 lowercase letters, digits or '-'")
    flavor = rootfs.Flavor(suite, arch or emulation.host_arch())
    flavor.check()
    boot_timeout = BOOT_TIMEOUT if flavor.native else BOOT_TIMEOUT_EMULATED
    if jetson is not None:
        board = identity.profile(jetson)
        if board is None:
            raise UsageError(f"unknown Jetson profile {jetson!r}",
                             hint="choose one of: " + ", ".join(identity.PROFILES))
        jetson = board.slug
    _preflight()
    existing = get(name)
    if existing and existing.running():
        if existing.jetson != jetson or existing.flavor != flavor:
            raise UsageError(f"stand-in {name} is running with Jetson profile {existing.jetson} on {existing.suite} "
                             f"{existing.arch}", hint=f"run `edgekit sandbox down {name}` first")
        _wait_ssh(existing, boot_timeout)
        return existing
    if existing:
        down(name)
    emulation.ensure(flavor.arch, log)
    tarball = rootfs.ensure_tarball(log, suite, flavor.arch)
    used = {s.index for s in list_standins()}
    index = next(i for i in range(1, 250) if i not in used)
    sb = StandIn(name=name, index=index, jetson=jetson, state_dir=str(run_dir() / name), suite=suite,
                 arch=flavor.arch)
    sb.dir.mkdir(parents=True, exist_ok=True)
    (sb.dir / "state.json").write_text(json.dumps(asdict(sb)))
    try:
        _unpack(sb, tarball)
        _network(sb)
        _boot(sb)
        _wait_ssh(sb, boot_timeout)
    except BaseException:
        down(name)
        raise
    write_ssh_config()
    log(f"stand-in {name} is up at {sb.address} (ssh {LOGIN_USER}@{name})")
    return sb


def _unpack(sb: StandIn, tarball: Path) -> None:
    root = sb.dir / "root"
    root.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12G,mode=0755", "tmpfs", str(root)], check=True)
    subprocess.run(f"zstd -q -d -c {q(tarball)} | tar -C {q(root)} --numeric-owner -xf -",
                   shell=True, check=True)
    (root / "etc/hostname").write_text(sb.name + "\n")
    with open(root / "etc/hosts", "a") as fh:
        fh.write(f"127.0.1.1 {sb.name}\n{sb.host_address} controller\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"edgekit-standin-{sb.name}",
                    "-f", str(root / "etc/ssh/ssh_host_ed25519_key")], check=True)
    host_pub = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    sb.known_hosts.write_text(f"{sb.address} {host_pub[0]} {host_pub[1]}\n")
    if not sb.key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-sandbox",
                        "-f", str(sb.key)], check=True)
    pub = sb.key.with_suffix(".pub").read_text()
    for user in rootfs.USERS:
        ssh_dir = root / "home" / user / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(pub)
        subprocess.run(["chroot", str(root), "chown", "-R", f"{user}:{user}", f"/home/{user}/.ssh"], check=True)
    if sb.jetson:
        identity.plant(root, sb.dir / "firmware", sb.jetson)
        identity.plant_cpuinfo(root, sb.jetson, emulation.machine(sb.arch))
    if not sb.flavor.native:
        emulation.plant_standin_dropins(root)
    sb.ssh_config.write_text(
        f"Host {sb.name}\n    HostName {sb.address}\n    User {LOGIN_USER}\n    IdentityFile {sb.key}\n"
        f"    UserKnownHostsFile {sb.known_hosts}\n    StrictHostKeyChecking yes\n    IdentitiesOnly yes\n")


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", netns, "ip", *args] if netns else ["ip", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _network(sb: StandIn) -> None:
    host_if, guest_if = f"ek{sb.index}h", f"ek{sb.index}g"
    subprocess.run(["ip", "netns", "del", sb.netns], stderr=subprocess.DEVNULL, check=False)
    subprocess.run(["ip", "link", "del", host_if], stderr=subprocess.DEVNULL, check=False)
    _ip("netns", "add", sb.netns)
    _ip("link", "add", host_if, "type", "veth", "peer", "name", guest_if)
    _ip("link", "set", guest_if, "netns", sb.netns)
    _ip("addr", "add", f"{sb.host_address}/24", "dev", host_if)
    _ip("link", "set", host_if, "up")
    _ip("addr", "add", f"{sb.address}/24", "dev", guest_if, netns=sb.netns)
    _ip("link", "set", guest_if, "up", netns=sb.netns)
    _ip("link", "set", "lo", "up", netns=sb.netns)


def _boot(sb: StandIn) -> None:
    args = ["systemd-nspawn", "-b", "-D", str(sb.dir / "root"), f"--machine=ek-{sb.name}",
            "--register=no", "--keep-unit", "--link-journal=no", "--resolv-conf=off",
            f"--network-namespace-path=/run/netns/{sb.netns}",
            f"--bind={shared_ccache_dir()}:/var/cache/edgekit/ccache"]
    if sb.jetson:
        args.append(f"--bind-ro={sb.dir / 'firmware'}:/sys/firmware")
    if emulation.kill_signal(sb.arch):
        args.append(f"--kill-signal={emulation.kill_signal(sb.arch)}")
    nspawn = sh(*args)
    stop = q(sb.dir / "stopping")
    # Exit status 133 means the guest asked for a reboot: boot it again, as systemd-nspawn@.service does.
    loop = f"while :; do {nspawn} </dev/null; rc=$?; [ -e {stop} ] && exit 0; [ $rc -eq 133 ] || exit $rc; done"
    with open(sb.dir / "console.log", "ab") as log:
        proc = subprocess.Popen(["bash", "-c", loop], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    (sb.dir / "supervisor.pid").write_text(str(proc.pid))


BOOT_TIMEOUT = 60.0
BOOT_TIMEOUT_EMULATED = 300.0          # systemd and sshd under qemu-user reach ssh in about 90 s on 2 busy cores


def _wait_ssh(sb: StandIn, timeout: float = BOOT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sb.ssh_ready():
            return
        if not sb.running():
            tail = (sb.dir / "console.log").read_text(errors="replace").splitlines()[-15:]
            raise UsageError(f"stand-in {sb.name} stopped while booting:\n" + "\n".join(tail),
                             hint="see " + str(sb.dir / "console.log"))
        time.sleep(0.25)
    raise UsageError(f"stand-in {sb.name} did not open ssh within {timeout:g}s",
                     hint="see " + str(sb.dir / "console.log"))


def down(name: str) -> bool:
    """Stop a stand-in and remove everything it made; False when there was none."""
    sb = get(name)
    if sb is None:
        return False
    (sb.dir / "stopping").touch()
    sup = _read_pid(sb.dir / "supervisor.pid")
    if sup and _alive(sup):
        for pid in _children(sup):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(sup) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(sup):
            os.killpg(sup, signal.SIGKILL)
            time.sleep(0.5)
    root = sb.dir / "root"
    if os.path.ismount(root):
        subprocess.run(["umount", "-R", "-l", str(root)], check=False)
    subprocess.run(["ip", "netns", "del", sb.netns], stderr=subprocess.DEVNULL, check=False)
    subprocess.run(["ip", "link", "del", f"ek{sb.index}h"], stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(sb.dir, ignore_errors=True)
    write_ssh_config()
    return True


def write_ssh_config() -> Path:
    """Collect every running stand-in's Host block into EDGEKIT_HOME/ssh_config, which edgekit reads."""
    target = paths.home() / "ssh_config"
    target.parent.mkdir(parents=True, exist_ok=True)
    blocks = [s.ssh_config.read_text() for s in list_standins() if s.ssh_config.is_file()]
    target.write_text("# Written by `edgekit sandbox`; stand-in devices now up.\n" + "\n".join(blocks))
    return target


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
