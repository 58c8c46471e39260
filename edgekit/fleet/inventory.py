"""Inventories: edgekit.toml (native) and Ansible INI/YAML (so Ansible users need not write two).

edgekit.toml:
    [defaults]            # settings for every host (model, ctx, port, user, ...)
    model = "chinese-alpaca-2-1.3b"
    [groups.lab]
    hosts = ["orin-1", "orin-2"]
    ctx = 2048            # group settings override defaults
    [hosts.orin-1]
    address = "10.0.0.11" # optional: the ssh_config alias is used when absent
    user = "nvidia"
    port = 22
    model = "llama-3-chinese-8b-instruct-v3:q4_k"   # host settings override group settings

Targets on the command line: host names, `@group`, `@all`, or plain `[user@]host[:port]`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ParseError, UsageError
from edgekit.remote.target import format_target

CONNECTION_KEYS = {"address", "user", "port", "identity"}


@dataclass
class Host:
    """An inventory host: how to reach it (address, user, port, identity) and its own settings."""

    name: str
    address: str | None = None
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    groups: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None      # a command-line target not in the inventory, passed through as written
    source: str | None = None   # "inventory PATH, host NAME": where its settings came from (for error messages)

    @property
    def target(self) -> str:
        """The target string for the transport: [user@]address[:port], or the name (an ssh_config alias)."""
        if self.raw is not None:
            return self.raw
        return format_target(self.address or self.name, self.user, self.port)


@dataclass
class Inventory:
    hosts: dict[str, Host] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def select(self, patterns: list[str]) -> list[Host]:
        """Hosts for names, @group and @all, in order, without duplicates; unknown names are plain targets."""
        out: dict[str, Host] = {}
        for pattern in patterns:
            if pattern.startswith("@"):
                group = pattern[1:]
                if group == "all":
                    names = list(self.hosts)
                elif group in self.groups:
                    names = self.groups[group]
                else:
                    raise UsageError(f"no group {group!r} in the inventory",
                                     hint="groups: " + (", ".join(sorted(self.groups)) or "none defined"))
                for name in names:
                    out.setdefault(name, self.hosts[name])
            else:
                out.setdefault(pattern, self.hosts.get(pattern) or Host(name=pattern, raw=pattern))
        return list(out.values())


_FORMAT = "write [hosts.NAME] tables (edgekit.toml) or an Ansible INI/YAML inventory (docs/getting-started.md: Fleets)"


def _table(value: Any, where: str, path: Path | None, example: str) -> dict:
    """`value` when it is a table (a mapping; None is an empty one), else ParseError naming where and the fix."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ParseError(f"{path}: {where} must be a table of settings, not {type(value).__name__} "
                         f"{_short(value)}", hint=f"write it as {example}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _host(name: str, data: dict, groups: list[str], settings: dict, path: Path | None = None) -> Host:
    where = f"inventory {path}, host {name}" if path else f"inventory host {name}"
    port = data.get("port") or data.get("ansible_port")
    if port is not None and not (str(port).isdecimal() and 0 < int(port) < 65536):
        raise UsageError(f"port {port!r} ({where}) is not an SSH port 1-65535", hint="fix the inventory file")
    for key in ("address", "ansible_host", "user", "ansible_user", "identity"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or any(ord(c) < 32 or c == "\x7f" for c in value)
                                  or value.startswith("-")):
            raise UsageError(f"{key} {value!r} ({where}) is not a plain name", hint="fix the inventory file")
    return Host(name=name, address=data.get("address") or data.get("ansible_host"),
                user=data.get("user") or data.get("ansible_user"), port=int(port) if port else None,
                identity=data.get("identity") or data.get("ansible_ssh_private_key_file"),
                groups=groups, settings=settings, source=where)


def _merge(base: dict, *layers: dict) -> dict:
    out = dict(base)
    for layer in layers:
        out.update({k: v for k, v in layer.items() if k not in CONNECTION_KEYS and k != "hosts"
                    and not k.startswith("ansible_")})
    return out


def _text(path: Path) -> str:
    """The inventory's text; ParseError when it is not UTF-8, UsageError when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParseError(f"{path}: not UTF-8 text (byte {e.start})", hint="save the inventory as UTF-8") from None
    except OSError as e:
        raise UsageError(f"cannot read the inventory {path}: {e.strerror or e}") from None


def load_toml(path: Path) -> Inventory:
    try:
        data = tomllib.loads(_text(path))
    except tomllib.TOMLDecodeError as e:
        raise ParseError(f"{path}: not valid TOML: {e}", hint="fix the inventory file") from None
    except RecursionError:
        raise ParseError(f"{path}: nests too deeply to be an inventory", hint=_FORMAT) from None
    for section in ("defaults", "groups", "hosts"):
        if not isinstance(data.get(section, {}), dict):
            raise ParseError(f"{path}: [{section}] must be a table", hint=_FORMAT)
    defaults = data.get("defaults", {})
    for name, g in data.get("groups", {}).items():
        _table(g, f"[groups.{name}]", path, f'[groups.{name}] with hosts = ["orin-1"]')
    for name, hd in data.get("hosts", {}).items():
        _table(hd, f"[hosts] {name}", path, f'[hosts.{name}] with address = "10.0.0.11"')
    groups = {}
    for name, g in data.get("groups", {}).items():
        members = g.get("hosts", []) if isinstance(g, dict) else None
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ParseError(f"{path}: groups.{name}.hosts must be a list of host names, not {_short(members)}",
                             hint=f'write hosts = ["orin-1"] under [groups.{name}]')
        groups[name] = list(members)
    host_data = data.get("hosts", {})
    for members in groups.values():
        for name in members:
            host_data.setdefault(name, {})
    inv = Inventory(groups=groups)
    for name, hd in host_data.items():
        member_of = [g for g, members in groups.items() if name in members]
        settings = _merge(defaults, *[data["groups"][g] for g in member_of], hd)
        inv.hosts[name] = _host(name, hd, member_of, settings, path)
    return inv


def load_ansible_ini(path: Path) -> Inventory:
    """Ansible's INI inventory: [group] sections, `name key=value ...` lines, [group:vars] sections."""
    inv = Inventory()
    section, kind = "ungrouped", "hosts"
    group_vars: dict[str, dict] = {}
    host_vars: dict[str, dict] = {}
    for raw in _text(path).splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            section, _, kind = name.partition(":")
            kind = kind or "hosts"
            inv.groups.setdefault(section, [])
            continue
        if kind == "vars":
            key, _, value = line.partition("=")
            group_vars.setdefault(section, {})[key.strip()] = value.strip()
        elif kind == "children":
            inv.groups.setdefault(section, []).extend(inv.groups.get(line, []))
        else:
            name, *pairs = line.split()
            host_vars.setdefault(name, {}).update(dict(p.split("=", 1) for p in pairs if "=" in p))
            inv.groups.setdefault(section, [])
            if name not in inv.groups[section]:
                inv.groups[section].append(name)
    for name, hv in host_vars.items():
        member_of = [g for g, members in inv.groups.items() if name in members]
        gv = [group_vars.get(g, {}) for g in member_of]
        merged = {k: v for layer in (*gv, hv) for k, v in layer.items()}
        settings = {k.removeprefix("edgekit_"): v for k, v in merged.items() if k.startswith("edgekit_")}
        inv.hosts[name] = _host(name, merged, member_of, settings, path)
    return inv


def load_ansible_yaml(path: Path) -> Inventory:
    import yaml   # a dependency of edgekit (pyproject.toml); imported here, where a YAML inventory is read

    try:
        data = yaml.safe_load(_text(path))
    except yaml.YAMLError as e:
        raise ParseError(f"{path}: not valid YAML: {' '.join(str(e).split())}", hint="fix the inventory file") from None
    except RecursionError:
        raise ParseError(f"{path}: nests too deeply to be an inventory", hint=_FORMAT) from None
    data = _table(data, "the YAML inventory", path, "a mapping of groups: all: {hosts: {orin-1: {}}}")
    inv = Inventory()
    collected: dict[str, dict] = {}

    def walk(name: str, node: Any, inherited: dict, depth: int = 0) -> list[str]:
        node = _table(node, f"group {name}", path, f"{name}: {{hosts: {{orin-1: {{}}}}}}")
        if depth > 32:
            raise ParseError(f"{path}: groups nest more than 32 deep (at {name})", hint=_FORMAT)
        gvars = {**inherited, **_table(node.get("vars"), f"{name}.vars", path, f"{name}: {{vars: {{key: value}}}}")}
        members = []
        for host, hv in _table(node.get("hosts"), f"{name}.hosts", path, f"{name}: {{hosts: {{orin-1: {{}}}}}}").items():
            hv = _table(hv, f"host {host}", path, f"{host}: {{ansible_host: 10.0.0.11}}")
            collected[host] = {**collected.get(host, {}), **gvars, **hv}
            members.append(host)
        for child, cnode in _table(node.get("children"), f"{name}.children", path,
                                   f"{name}: {{children: {{lab: {{hosts: {{orin-1: {{}}}}}}}}}}").items():
            members += walk(child, cnode, gvars, depth + 1)
        inv.groups[name] = list(dict.fromkeys(inv.groups.get(name, []) + members))
        return members

    for name, node in data.items():
        walk(name, node, {})
    for host, hv in collected.items():
        member_of = [g for g, members in inv.groups.items() if host in members and g != "all"]
        settings = {k.removeprefix("edgekit_"): v for k, v in hv.items() if k.startswith("edgekit_")}
        inv.hosts[host] = _host(host, hv, member_of, settings, path)
    inv.groups.pop("all", None)
    return inv


def load(path: str | Path | None) -> Inventory:
    """Load the inventory at path (or ./edgekit.toml when present); an empty inventory when there is none."""
    if path is None:
        default = Path("edgekit.toml")
        if not default.is_file():
            return Inventory()
        path = default
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"inventory not found: {path}", hint="pass --inventory PATH to an edgekit.toml or Ansible inventory")
    if path.suffix == ".toml":
        return load_toml(path)
    if path.suffix in (".yml", ".yaml"):
        return load_ansible_yaml(path)
    return load_ansible_ini(path)
