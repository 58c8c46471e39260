"""The stand-in device's root filesystem: debootstrapped Debian (bookworm; bullseye for an older python3), built
once per suite and architecture in a tmpfs, cached as zstd.

This machine's architecture is the default. Another (arm64) is debootstrapped and run under qemu-user emulation
(edgekit.sandbox.emulation registers it with binfmt_misc) and carries no build toolchain: llama.cpp is cross-built
for it on the controller (edgekit.llamacpp.cross), and compiling under emulation would take hours.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import UsageError
from edgekit.remote.command import q
from edgekit.sandbox import emulation

SUITE = "bookworm"        # the default stand-in (python3.11)
# What a freshly flashed Jetson has that matters to edgekit (systemd, sshd, sudo, python3, curl), plus the
# llama.cpp build toolchain: the stand-in cannot reach any package mirror, so it must already carry it.
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "python3", "curl", "ca-certificates",
    "procps", "iproute2", "build-essential", "cmake", "ninja-build", "git", "ccache", "libssl-dev",
    "python3-psutil",
]
BUILD_PACKAGES = ("build-essential", "cmake", "ninja-build", "git", "ccache", "libssl-dev")
# Other suites a stand-in can run, with their packages: bullseye's python3 is 3.9, the oldest the Debian mirror
# has (a JetPack 5 board has 3.8), so device-side Python runs under an interpreter older than this machine's.
# No build toolchain: a bullseye stand-in runs edgekit's device helper and exporter, it does not build llama.cpp.
SUITES = {
    SUITE: PACKAGES,
    "bullseye": ["systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "python3", "curl", "ca-certificates",
                 "procps", "iproute2"],
}
USERS = {
    "jetson": "sudo without a password, like a configured Jetson",
    "sudopw": "sudo needs the password 'edgekit'",
    "guest": "no sudo at all",
}
SUDOPW_PASSWORD = "edgekit"
LAYOUT_VERSION = "3"  # bump when the customisation below changes


def cache_dir() -> Path:
    path = Path(os.environ.get("EDGEKIT_SANDBOX_CACHE", "/var/cache/edgekit/sandbox"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Flavor:
    """Which Debian a stand-in runs: its suite and its architecture (Debian's name: amd64, arm64)."""

    suite: str = SUITE
    arch: str = field(default_factory=emulation.host_arch)

    @property
    def native(self) -> bool:
        return self.arch == emulation.host_arch()

    @property
    def packages(self) -> list[str]:
        """The suite's packages; under emulation without the build toolchain (llama.cpp is cross-built for it)."""
        return SUITES[self.suite] if self.native else [p for p in SUITES[self.suite] if p not in BUILD_PACKAGES]

    def check(self) -> None:
        if self.suite not in SUITES:
            raise UsageError(f"no stand-in rootfs for Debian {self.suite!r}",
                             hint="use --suite " + " or --suite ".join(SUITES))
        if self.arch not in emulation.ARCHES:
            raise UsageError(f"no stand-ins for architecture {self.arch!r}",
                             hint="use --arch " + " or --arch ".join(emulation.ARCHES))


def tarball_path(suite: str = SUITE, arch: str | None = None) -> Path:
    """The cached tarball of a suite on an architecture (None: this machine's, whose names are unchanged)."""
    flavor = Flavor(suite, arch or emulation.host_arch())
    words = [suite, LAYOUT_VERSION, *flavor.packages] + ([] if flavor.native else [flavor.arch])
    key = hashlib.sha256(" ".join(words).encode()).hexdigest()[:12]
    return cache_dir() / f"rootfs-{suite}{'' if flavor.native else '-' + flavor.arch}-{key}.tar.zst"


def mirror() -> str:
    """The Debian mirror this host's apt uses (so the stand-in builds wherever apt works)."""
    for src in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if src.is_file():
            for line in src.read_text().splitlines():
                line = line.strip()
                if line.startswith("URIs:"):
                    return line.split()[1]
                if line.startswith("deb ") and "security" not in line:
                    return next(p for p in line.split()[1:] if p.startswith("http"))
    return "http://deb.debian.org/debian"


def ensure_tarball(log, suite: str = SUITE, arch: str | None = None) -> Path:
    """Return the cached rootfs tarball of a suite (on an architecture: None is this machine's), building it first
    if missing (about 2 minutes; 5 under emulation)."""
    flavor = Flavor(suite, arch or emulation.host_arch())
    flavor.check()
    tarball = tarball_path(suite, flavor.arch)
    if tarball.is_file():
        return tarball
    if not shutil.which("debootstrap"):
        raise UsageError("debootstrap is not installed", hint="apt-get install debootstrap systemd-container zstd")
    work = Path(tempfile.mkdtemp(prefix="edgekit-rootfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6G", "tmpfs", str(work)], check=True)
    try:
        root = work / "root"
        what = suite if flavor.native else f"{suite} {flavor.arch}, under qemu-user emulation"
        log(f"building the stand-in rootfs (debootstrap {what}, once; cached at {tarball})")
        proc = subprocess.run(
            ["debootstrap", f"--arch={flavor.arch}", "--variant=minbase", f"--include={','.join(flavor.packages)}",
             suite, str(root), mirror()],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise UsageError("debootstrap failed:\n" + "\n".join(proc.stdout.splitlines()[-15:]),
                             hint="check that apt-get works on this machine (apt-get update)")
        _customise(root)
        part = tarball.with_suffix(".part")
        subprocess.run(f"tar -C {q(root)} --numeric-owner -cf - . | zstd -q -T0 -3 -o {q(part)} -f",
                       shell=True, check=True)
        part.rename(tarball)
    finally:
        subprocess.run(["umount", "-l", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def _chroot(root: Path, script: str) -> None:
    subprocess.run(["chroot", str(root), "/bin/sh", "-ec", script], check=True)


def _customise(root: Path) -> None:
    users = " ".join(USERS)
    _chroot(root, f"""
for u in {users}; do useradd -m -s /bin/bash "$u"; done
usermod -aG sudo jetson
usermod -aG sudo sudopw
echo 'sudopw:{SUDOPW_PASSWORD}' | chpasswd
echo 'jetson ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-jetson
chmod 0440 /etc/sudoers.d/90-jetson
# Nothing may take the dpkg lock mid-test, and nothing may wait for a network the stand-in does not have.
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer 2>/dev/null || true
systemctl mask systemd-networkd-wait-online.service 2>/dev/null || true
# Host keys are made per stand-in at boot, never shared through the cache.
rm -f /etc/ssh/ssh_host_*
printf 'PasswordAuthentication no\\nKbdInteractiveAuthentication no\\nUseDNS no\\n' > /etc/ssh/sshd_config.d/edgekit.conf
: > /etc/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
""")
