"""A Prometheus scrape config for the fleet's exporters: prometheus.yml plus file_sd targets with host labels.

    config, targets = scrape_config([ScrapeTarget("orin", "10.0.0.5", board="orin-nano-8gb", ...)])

Each device has its own bearer token, and Prometheus sets `authorization` per scrape job, not per target: so one
job per device, all reading the same file_sd file and each keeping its own target (relabel `keep` on the
`target` label), all relabelled to job="edgekit". Target labels: `target` (edgekit's name for the device),
`board`, `default_model` (not `model`: the exporter's llama-server series carry `model` themselves, and a target
label of the same name would rename theirs to exported_model). Tokens stay in their 0600 files
($EDGEKIT_HOME/targets/<target>.exporter-token); the config names them with `credentials_file:`.

Every value that reaches the YAML is checked once (validate) and written as a JSON string, which YAML reads as
the same double-quoted string. Pure functions, plus `write_scrape_config`, which writes atomically.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgekit import state
from edgekit.errors import UsageError
from edgekit.exporter.app import DEFAULT_PORT
from edgekit.metrics import tokens

JOB = "edgekit"
TARGETS_FILE = "edgekit-targets.json"
CONFIG_FILE = "prometheus.yml"
INCLUDE_FILE = "edgekit-scrape.yml"          # scrape_configs only: for `scrape_config_files:` (Prometheus >= 2.43)
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?$")
_DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h)$")


@dataclass(frozen=True)
class ScrapeTarget:
    """One device's exporter as Prometheus reaches it."""

    target: str                        # edgekit's name for the device (inventory / state name)
    address: str                       # host name or IP the exporter answers on
    port: int = DEFAULT_PORT
    board: str = ""
    model: str = ""
    token_file: str | None = None      # absolute path on the controller; None: an exporter without a token

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def _label_value(what: str, value: str) -> None:
    if len(value) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UsageError(f"{what} {value!r} is not a usable label value (control characters, or over 200 chars)")


def validate(hosts: list[ScrapeTarget], interval: str) -> None:
    """Every value that reaches the YAML, checked once: names, addresses, ports, paths, the interval."""
    if not _DURATION.match(interval):
        raise UsageError(f"scrape interval {interval!r} is not a Prometheus duration like 5s or 500ms")
    seen: set[str] = set()
    for h in hosts:
        if not _TARGET.match(h.target):
            raise UsageError(f"target name {h.target!r}: use letters, digits and . _ @ : - (at most 128)")
        if h.target in seen:
            raise UsageError(f"target {h.target!r} is given twice")
        seen.add(h.target)
        try:
            ipaddress.ip_address(h.address)
        except ValueError:
            if not _HOSTNAME.match(h.address):
                raise UsageError(f"{h.target}: {h.address!r} is neither an IP address nor a host name") from None
        if not isinstance(h.port, int) or not 0 < h.port < 65536:
            raise UsageError(f"{h.target}: port {h.port!r} is not a TCP port")
        if h.token_file is not None:
            if not os.path.isabs(h.token_file) or any(ord(c) < 32 or ord(c) == 127 for c in h.token_file):
                raise UsageError(f"{h.target}: the token file must be an absolute path, not {h.token_file!r}")
        _label_value(f"{h.target}: board", h.board)
        _label_value(f"{h.target}: model", h.model)


def _q(value: object) -> str:
    """A YAML scalar: JSON's double-quoted string (a YAML double-quoted string with the same meaning)."""
    return json.dumps(value)


def _timeout(interval: str) -> str:
    """A scrape timeout below the interval (Prometheus refuses one above it): 80 %, in ms."""
    number, unit = re.match(r"^(\d+)(ms|s|m|h)$", interval).groups()   # type: ignore[union-attr]
    ms = int(number) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[unit]
    return f"{max(1, ms * 4 // 5)}ms"


def targets_json(hosts: list[ScrapeTarget]) -> str:
    """The file_sd targets: one group per device with its labels (empty ones left out)."""
    groups = []
    for h in hosts:
        labels = {"target": h.target, "board": h.board, "default_model": h.model}
        groups.append({"targets": [h.endpoint], "labels": {k: v for k, v in labels.items() if v}})
    return json.dumps(groups, indent=2) + "\n"


def scrape_jobs(hosts: list[ScrapeTarget], targets_file: str, interval: str) -> list[str]:
    """The `scrape_configs:` entries, one job per device (its own bearer token), as YAML lines."""
    lines = []
    for h in hosts:
        lines += [f"  - job_name: {_q(f'{JOB}-{h.target}')}",
                  f"    scrape_interval: {interval}",
                  f"    scrape_timeout: {_timeout(interval)}",
                  "    metrics_path: /metrics",
                  "    scheme: http"]
        if h.token_file:
            lines += ["    authorization:",
                      "      type: Bearer",
                      f"      credentials_file: {_q(h.token_file)}"]
        lines += ["    file_sd_configs:",
                  f"      - files: [{_q(targets_file)}]",
                  "    relabel_configs:",
                  "      - source_labels: [target]",
                  f"        regex: {_q(re.escape(h.target))}",
                  "        action: keep",
                  "      - target_label: job",
                  f"        replacement: {_q(JOB)}"]
    return lines


def scrape_config(hosts: list[ScrapeTarget], targets_file: str = TARGETS_FILE, interval: str = "5s",
                  standalone: bool = True) -> tuple[str, str]:
    """-> (prometheus.yml text, file_sd targets JSON). `standalone`: with a `global:` block (a whole config);
    else only `scrape_configs:` (a file for an existing Prometheus' `scrape_config_files:`)."""
    validate(hosts, interval)
    head = ["# Generated by edgekit: the fleet's metrics exporters (one job per device: each has its own token).",
            "# Regenerate it rather than editing it."]
    if standalone:
        head += ["global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}"]
    body = ["scrape_configs:"] + (scrape_jobs(hosts, targets_file, interval) if hosts else [])
    if not hosts:
        body = ["scrape_configs: []"]
    return "\n".join(head + body) + "\n", targets_json(hosts)


def targets_from_state(names: list[str]) -> list[ScrapeTarget]:
    """The devices as provision recorded them on this controller (address, model, board, token file)."""
    out = []
    for name in names:
        saved = state.load(name)
        if not saved:
            raise UsageError(f"edgekit has not provisioned {name} from this machine",
                             hint=f"run `edgekit provision {name}` first")
        token = saved.get("exporter_token_file") or (str(tokens.token_path(name))
                                                     if tokens.token_path(name).is_file() else None)
        address = saved.get("exporter_address") or urlsplit(saved.get("url") or "").hostname or ""
        out.append(ScrapeTarget(name, address, int(saved.get("exporter_port") or DEFAULT_PORT),
                                saved.get("board") or "", saved.get("model") or "", token))
    return out


def write_scrape_config(out_dir: str | Path, hosts: list[ScrapeTarget], interval: str = "5s") -> dict[str, Path]:
    """Write prometheus.yml (a whole config), edgekit-scrape.yml (its scrape_configs, to include in an existing
    Prometheus) and edgekit-targets.json into out_dir; -> {"config", "include", "targets"}: their paths."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    targets_file = str(out / TARGETS_FILE)
    config, targets = scrape_config(hosts, targets_file, interval)
    include, _ = scrape_config(hosts, targets_file, interval, standalone=False)
    paths = {"config": out / CONFIG_FILE, "include": out / INCLUDE_FILE, "targets": out / TARGETS_FILE}
    state.write_file(paths["targets"], targets, 0o644)   # targets first: a config never names a missing file
    state.write_file(paths["include"], include, 0o644)
    state.write_file(paths["config"], config, 0o644)
    return paths
