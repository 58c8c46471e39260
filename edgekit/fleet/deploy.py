"""Provision a fleet: read facts everywhere, build llama.cpp once per build key, deploy the packed build to all.

A build key is (CPU arch, llama.cpp version, flags hash), and the flags hash already covers the CUDA arch, the
CUDA version and every CMake define. The first host of each key (or --build-on) builds; its install prefix is
packed, fetched into the controller cache (builds/<id>.tar.gz + .json with sha256), and pushed to the others.
A later device of the same kind finds the pack in the cache and installs it in seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from edgekit import paths
from edgekit.llamacpp.cmake import plan_build
from edgekit.llamacpp.source import resolve_source
from edgekit.llamacpp.packs import fetch_pack, pack_build
from edgekit.llamacpp.steps import run_build
from edgekit.errors import UsageError
from edgekit.fleet.inventory import Host
from edgekit.fleet.runner import FleetReporter, HostRow, run_fleet
from edgekit.provision import Preflight, ProvisionOptions, provision
from edgekit.remote.lock import device_lock
from edgekit.remote.plan import Context, run_steps
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport

class Fleet:
    def __init__(self, hosts: list[Host], become_password: str | None = None, accept_new_host_key: bool = False,
                 forks: int = 5, reporter: FleetReporter | None = None, on_trace=None):
        self.hosts = hosts
        self.on_trace = on_trace          # -v: every transport's round trips (edgekit.remote.transport.Trace)
        self.become_password = become_password
        self.accept_new = accept_new_host_key
        self.forks = forks
        self.reporter = reporter

    def transport(self, host: Host) -> Transport:
        return Transport(parse_target(host.target, host.identity), become_password=self.become_password,
                         accept_new_host_key=self.accept_new, on_trace=self.on_trace)

    def run(self, job, title: str, serial: int | None = None, max_fail_percent: float = 100.0, hosts=None):
        return run_fleet(hosts if hosts is not None else self.hosts, job, forks=self.forks, serial=serial,
                         max_fail_percent=max_fail_percent, title=title, reporter=self.reporter)


def provision_fleet(fleet: Fleet, opts: dict[str, ProvisionOptions], *, dry_run: bool = False,
                    build_on: str | None = None, serial: int | None = None,
                    max_fail_percent: float = 100.0) -> dict[str, Any]:
    """Provision every host with its own validated options (by host name); returns {"facts": results,
    "builds": {...}, "deploy": results}."""
    first = opts[fleet.hosts[0].name]
    source = resolve_source(first.build)

    def facts_job(host: Host, row: HostRow):
        with fleet.transport(host) as t:
            ctx = Context(t, dry_run=dry_run, reporter=row)     # facts only: reads, and a dry run writes nothing
            run_steps(ctx, [Preflight()])
            facts = ctx.run.facts
        plan = plan_build(facts, opts[host.name].build, source)
        return f"{facts.hostname}: build {plan.id}", {"facts": facts, "key": (facts.arch, plan.id)}

    facts_results = fleet.run(facts_job, "facts")
    reachable = {r.host: r.value for r in facts_results if r.status != "failed"}
    groups: dict[tuple, list[Host]] = {}
    for host in fleet.hosts:
        if host.name in reachable:
            groups.setdefault(reachable[host.name]["key"], []).append(host)
    if build_on and build_on not in reachable:
        raise UsageError(f"--build-on {build_on}: not among the reachable hosts",
                         hint="reachable: " + (", ".join(reachable) or "none"))

    builds: dict[tuple, dict] = {}
    lock = threading.Lock()

    def builder_job(host: Host, row: HostRow):
        key = reachable[host.name]["key"]
        cached = paths.cache() / "builds" / f"{key[1]}.tar.gz"
        if cached.is_file() and cached.with_suffix("").with_suffix(".json").is_file():
            with lock:
                builds[key] = {"tarball": cached, "builder": None, "seconds": 0.0}
            return f"cached build {key[1]}", None
        start = time.monotonic()
        with fleet.transport(host) as t:
            ctx = Context(t, dry_run=dry_run, reporter=row)
            ctx.run.facts = reachable[host.name]["facts"]
            with device_lock(t, "fleet build", enabled=not dry_run):
                run_build(ctx, opts[host.name].build)
            if dry_run:
                with lock:
                    builds[key] = {"tarball": None, "builder": host.name, "seconds": 0.0}
                return f"would build {key[1]} here", None
            tarball = fetch_pack(ctx, pack_build(ctx))
        with lock:
            builds[key] = {"tarball": tarball, "builder": host.name, "seconds": time.monotonic() - start}
        return f"built {key[1]}, packed into the controller cache", None

    builders = []
    for key, members in groups.items():
        chosen = next((h for h in members if h.name == build_on), members[0])
        builders.append(chosen)
    build_results = fleet.run(builder_job, "build once per kind", hosts=builders) if builders else []
    failed_builds = {reachable[r.host]["key"]: r.message for r in build_results if r.status == "failed"}

    def deploy_job(host: Host, row: HostRow):
        info = reachable.get(host.name)
        if info is None:
            raise UsageError("unreachable in the facts phase", hint="see the facts table")
        if info["key"] in failed_builds:
            raise UsageError(f"the build for this kind failed: {failed_builds[info['key']]}")
        build = builds[info["key"]]
        o = opts[host.name]
        with fleet.transport(host) as t:
            ctx = Context(t, dry_run=dry_run, reporter=row)
            ctx.run.facts = info["facts"]
            # the builder (or a dry run) runs its own build steps (no-ops / the plan); the others install the pack
            own = build["builder"] == host.name or build["tarball"] is None
            results = provision(ctx, o, pack=None if own else build["tarball"])
        row.result.steps[:] = results
        return f"serving {ctx.run.model.name if ctx.run.model else '?'} on :{o.service.port}", None

    deploy = fleet.run(deploy_job, "provision", serial=serial, max_fail_percent=max_fail_percent)
    return {"facts": facts_results, "builds": builds, "build_results": build_results, "deploy": deploy}
