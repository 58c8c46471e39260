"""The ONE settings model for a provision: every setting declared once (`SETTINGS`: name, type, default,
validation, help, its flag and inventory spellings), and command-line flags, inventory values and defaults merged
and then validated once, before anything connects. Derived from the declaration: the options of `edgekit
provision` (edgekit.cli.options.takes_settings), the inventory reader (`resolve`, unknown keys refused with a "did
you mean"), the Ansible argument spec (`ansible_argument_spec`) and docs/settings.md (`python3 -m
edgekit.settings_doc`). Every value remembers where it came from, so an error names the
setting and its source ("--ctx (flag)", "ctx (inventory edgekit.toml, host orin-1)", "default").

Precedence: an explicit flag > the host's inventory settings (host > group > [defaults]) > edgekit's defaults.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import socket
import urllib.parse
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Callable

from edgekit.errors import UsageError
from edgekit.layout import SWAP_FILE
from edgekit.facts.cuda import parse_arch_override

CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
FETCH_ON = ("auto", "device", "controller")
SPEC_TYPES = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache")   # b11312, no draft model
MAX_CTX = 1 << 20
MAX_CACHE_RAM_MIB = 1 << 20       # MiB; edgekit always bounds the prompt cache (llama.cpp's -1, no limit, is refused)
MAX_SLEEP_IDLE = 7 * 86400        # llama.cpp refuses 0; "never" is leaving the setting out
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(:[A-Za-z0-9_.-]{1,32})?$")
_CMAKE = re.compile(r"^-D[A-Za-z_][A-Za-z0-9_]*(:[A-Z]+)?=[^\s\x00-\x1f\x7f]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: everything else (the command line's options, the inventory reader, the Ansible
    module's argument spec, docs/settings.md) is derived from this declaration."""

    name: str                          # the key in edgekit.toml and inventories, the Ansible module argument
    type: type                         # bool, int, str, or tuple (a list of text)
    default: Any
    check: Callable[[Any], Any]        # returns the normalised value or raises ValueError(reason)
    help: str                          # one sentence; "{default}" is replaced by the default
    flag: str | None = None            # the `edgekit provision` option (None: inventory and Ansible only)
    short: str | None = None           # its short form, e.g. -m
    negated: bool = False              # the flag is --no-x and sets the setting to False
    repeat_into: str | None = None     # -m given more than once: the first is this setting, all go to the one named
    envvar: str | None = None          # an environment variable that sets the option too
    aliases: tuple[str, ...] = ()      # other inventory spellings (Ansible's variable names without `edgekit_`)
    negated_alias: str | None = None   # an inventory spelling that holds the opposite (no_api_key = true)
    choices: tuple[str, ...] | None = None
    secret: bool = False               # never logged (Ansible's no_log)

    @property
    def applies(self) -> tuple[str, ...]:
        """Where the setting can be given: the command line (when it has a flag), inventories, Ansible."""
        return (*(("cli",) if self.flag else ()), "inventory", "ansible")

    @property
    def help_text(self) -> str:
        return self.help.replace("{default}", str(self.default))

    @property
    def repeatable(self) -> bool:
        return self.type is tuple or self.repeat_into is not None


def _int(lo: int, hi: int | None = None, optional: bool = False):
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()))):
            raise ValueError(f"{v!r} is not a whole number")
        v = int(v)
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"{v} is out of range ({lo}-{hi})" if hi else f"{v} must be at least {lo}")
        return v
    return check


def _bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return v.strip().lower() in ("true", "yes", "1", "on")
    raise ValueError(f"{v!r} is not true or false")


def _text(pattern: re.Pattern | None = None, what: str = "", optional: bool = True):
    def check(v):
        if v is None or v == "":
            if optional:
                return None
            raise ValueError("is empty")
        if not isinstance(v, str):
            raise ValueError(f"{v!r} is not text")
        if _CONTROL.search(v):
            raise ValueError(f"{v!r} contains a control character (newline, tab, ...)")
        if pattern is not None and not pattern.match(v):
            raise ValueError(f"{v!r} is not {what}")
        return v
    return check


def _choice(options: tuple[str, ...], optional: bool = True):
    def check(v):
        if v is None and optional:
            return None
        if v not in options:
            raise ValueError(f"{v!r} is not one of {', '.join(options)}")
        return v
    return check


def normalize_host(v) -> str:
    """An IP address (any form the C library accepts: 0, 0x0, 127.1 are IPv4) or a hostname; returned canonical."""
    v = _text(what="an address", optional=False)(v)
    text = v.strip("[]")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(text))      # legacy IPv4 forms: "0", "0x0", "127.1"
    except OSError:
        pass
    if _HOSTNAME.match(text):
        return text
    raise ValueError(f"{v!r} is not an IP address or hostname")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(v):
    v = _text(what="a URL")(v)
    if v is None:
        return None
    if "://" not in v:
        return v                                                # a local file on the controller
    u = urllib.parse.urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{v!r} is not an http(s) URL")
    try:
        u.port
    except ValueError as e:
        raise ValueError(f"{v!r}: {e}") from None
    return v


def _sha256(v):
    v = _text(what="a sha256")(v)
    if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
        raise ValueError(f"{v!r} is not a sha256 (64 hex digits)")
    return v.lower() if v else None


def _cmake_flags(v):
    if v is None or v == "":
        return ()
    if not isinstance(v, (str, list, tuple)):
        raise ValueError(f"{v!r} is not a list of -DNAME=VALUE")
    items = [v] if isinstance(v, str) else list(v)
    out = []
    for item in items:
        if not isinstance(item, str) or not _CMAKE.match(item):
            raise ValueError(f"{item!r} is not a cmake definition -DNAME=VALUE (no spaces or control characters)")
        if item.split("=", 1)[0] in ("-DGGML_RPC", "-DGGML_RPC:BOOL"):
            raise ValueError("the RPC backend is never built by edgekit (it is unauthenticated)")
        out.append(item)
    return tuple(out)


def _models(v):
    """Several models for one service (router mode): a list of catalog NAME[:QUANT], each once."""
    if v is None or v == "" or v == () or v == []:
        return ()
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"{v!r} is not a list of models, e.g. [\"gemma3-270m\", \"smollm2-135m\"]")
    out = tuple(_text(_MODEL, "a catalog NAME or NAME:QUANT", False)(m) for m in v)
    names = [m.split(":", 1)[0] for m in out]
    if len(set(names)) != len(names):
        raise ValueError(f"a model is named twice in {list(out)}")
    return out


def _cuda_arch(v):
    v = _text(what="a CUDA architecture")(v)
    if v is not None:
        parse_arch_override(v)                                  # raises ValueError
    return v


_ORIGIN = re.compile(r"^(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?/?$", re.I)


def _cors_origin(v):
    """One web origin browsers may call the API from (llama-server sends it as Access-Control-Allow-Origin, so it
    is normalised as browsers write an origin: lower case, no default port, no path), or `localhost` (pages served
    from the device itself, any port: llama-server's own mode). None: no other origin (docs/security.md)."""
    v = _text(what="an origin")(v)
    if v is None:
        return None
    if v.strip().lower() == "localhost":
        return "localhost"
    if "*" in v:
        raise ValueError("'*' would let every web page use the service; name the one origin that may, e.g. "
                         "http://dashboard.lan:3000")
    m = _ORIGIN.match(v.strip())
    if not m:
        raise ValueError(f"{v!r} is not an origin like http://host:port (scheme, host and port only; one origin)")
    scheme, host, port = m[1].lower(), m[2].lower(), m[3]
    if not host.startswith("[") and not _HOSTNAME.match(host):
        raise ValueError(f"{v!r}: {host!r} is not a hostname or IP address")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"{v!r}: port {port} is out of range")
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{int(port)}" if port is not None and int(port) != default else "")


_POWER_MODE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_SWAP = re.compile(r"^[1-9][0-9]{0,5}(\.[0-9]+)?[KMGT]i?B?$", re.I)
_PATH = re.compile(r"^/[A-Za-z0-9._/-]{1,200}$")
_CPU_LEVEL = re.compile(r"^[A-Za-z0-9.+_-]+$")

# Every setting of a provision, in the order `edgekit provision --help` and docs/settings.md list them.
SETTINGS: list[Setting] = [
    # the model and the server
    Setting("model", str, "chinese-alpaca-2-1.3b", _text(_MODEL, "a catalog NAME or NAME:QUANT", False),
            "Catalog name, optionally NAME:QUANT (default {default}). Repeat it to serve several models from one "
            "service (router mode; the first is the default).", "--model", "-m", repeat_into="models",
            aliases=("model_name",)),
    Setting("models", tuple, (), _models, "Several catalog models served by one service (router mode); the "
            "command line gives them as -m repeated.", aliases=("model_names",)),
    Setting("models_max", int, None, _int(1, 64, optional=True), "Router mode: models loaded at once (default: as "
            "many as fit this device's memory together).", "--models-max"),
    Setting("ctx", int, None, _int(1, MAX_CTX, optional=True), "Context length in tokens (default: the model's "
            "recommended one, capped to what fits).", "--ctx"),
    Setting("port", int, 8080, _int(1, 65535), "Port llama-server listens on (default {default}).", "--port"),
    Setting("host", str, "0.0.0.0", normalize_host, "Address to bind (default {default}, with an API key).",
            "--host"),
    Setting("api_key", bool, True, _bool, "Serve without a key (loopback --host only).", "--no-api-key",
            negated=True, negated_alias="no_api_key"),
    Setting("cors_origin", str, None, _cors_origin, "The one web origin (e.g. http://dashboard.lan:3000, or "
            "localhost: pages served from the device) whose pages may call the API from a browser (default: none; "
            "docs/security.md).", "--cors-origin"),
    # the build
    Setting("llama_src", str, None, _text(), "llama.cpp source: a directory, a .tar.gz (e.g. the llama-cpp-python "
            "sdist) or a URL, pushed to the device.", "--llama-src"),
    Setting("cpu", bool, False, _bool, "Build CPU-only on purpose (refused by default without CUDA).", "--cpu"),
    Setting("cuda_arch", str, None, _cuda_arch, "GPU arch, e.g. 87 or compute_87 (default: from the device; also "
            "CUDA_DOCKER_ARCH).", "--cuda-arch"),
    Setting("cpu_level", str, None, _text(_CPU_LEVEL, "a CPU level name"), "CPU instruction level, e.g. x86-64-v3, "
            "armv8.2-a+dotprod+fp16 or native (default: the best that passes the gate).", "--cpu-level"),
    Setting("cmake_flags", tuple, (), _cmake_flags, "Extra cmake definition -DNAME=VALUE (repeatable; changes the "
            "flags hash, so it is a separate build).", "--cmake-flag"),
    Setting("jobs", int, None, _int(1, 1024, optional=True), "Parallel compile jobs (default: from CPUs and RAM).",
            "--jobs", "-j", aliases=("build_jobs",)),
    Setting("skip_deps", bool, False, _bool, "Do not apt-get install missing build tools (offline machines that "
            "have what they need).", "--skip-deps"),
    # fetching the model
    Setting("fetch_on", str, "auto", _choice(FETCH_ON, optional=False), "Who downloads the model: device, "
            "controller, or auto (the device when it can reach the source).", "--fetch-on", choices=FETCH_ON),
    Setting("hf_endpoint", str, None, _url, "Hugging Face mirror (also HF_ENDPOINT).", "--hf-endpoint",
            envvar="HF_ENDPOINT"),
    Setting("model_url", str, None, _url, "Fetch the model file from this URL instead.", "--model-url"),
    Setting("sha256", str, None, _sha256, "The sha256 the --model-url download must have.", "--sha256",
            aliases=("model_sha256",)),
    Setting("allow_unpinned", bool, False, _bool, "Install a model quant that has no pinned commit and sha256 "
            "(checked only against the server's X-Linked-Etag).", "--allow-unpinned"),
    Setting("force", bool, False, _bool, "Install a model even if the fit check says it will not fit.", "--force"),
    # the server's settings
    Setting("parallel", int, 2, _int(1, 256), "Server slots (concurrent requests, default {default}).",
            "--parallel"),
    Setting("threads", int, None, _int(1, 1024, optional=True), "CPU threads for llama-server.", "--threads", "-t"),
    Setting("cache_type_kv", str, None, _choice(CACHE_TYPES), "KV cache type, e.g. q8_0 or q4_0 (less memory).",
            "--cache-type", aliases=("cache_type",), choices=CACHE_TYPES),
    Setting("cache_ram_mib", int, None, _int(0, MAX_CACHE_RAM_MIB, optional=True), "Prompt cache in host RAM, MiB "
            "(0: off; default: half the headroom the fit leaves, at most llama.cpp's 8192).", "--cache-ram",
            aliases=("cache_ram",)),
    Setting("draft", str, None, _text(_MODEL, "a catalog NAME or NAME:QUANT"), "Speculative decoding: a smaller "
            "catalog model of the same vocabulary drafts tokens the model checks (NAME[:QUANT]; refused unless "
            "their tokenizers match).", "--draft"),
    Setting("spec_type", str, None, _choice(SPEC_TYPES), "Draft-free speculation from the text so far (copy-heavy "
            "work: code edits, summaries): " + ", ".join(SPEC_TYPES) + ".", "--spec-type", choices=SPEC_TYPES),
    Setting("lora", str, None, _text(), "A LoRA adapter served with the model: a .gguf file on this machine, "
            "optionally :SCALE (default 1); refused unless made for the model.", "--lora"),
    Setting("sleep_idle_seconds", int, None, _int(1, MAX_SLEEP_IDLE, optional=True), "Unload the model after this "
            "many seconds without requests (default: never).", "--sleep-idle-seconds"),
    Setting("lock_file", str, None, _text(), "edgekit.lock: the sha256 of every model, recorded on first fetch and "
            "checked on every later install (default: next to the inventory, else in edgekit's state folder).",
            "--lock-file"),
    Setting("rollback", bool, True, _bool, "Keep a change that leaves the service unhealthy (for debugging) instead "
            "of restoring the last healthy state.", "--no-rollback", negated=True),
    # Jetson tuning (edgekit.tuning)
    Setting("power_mode", str, None, _text(_POWER_MODE, "a power mode's name"), "Jetson power mode by its name in "
            "the board's /etc/nvpmodel.conf (e.g. MAXN_SUPER, 25W), or max / efficient.", "--power-mode"),
    Setting("clocks", str, None, _choice(("max",)), "max: pin the clocks (jetson_clocks), at every boot too (a "
            "oneshot unit before the server).", "--clocks", choices=("max",)),
    Setting("headless", bool, False, _bool, "Boot to multi-user.target: the desktop's memory goes to the model "
            "(next boot).", "--headless"),
    Setting("swap", str, None, _text(_SWAP, "a size like 8G"), "A swap file of this size (e.g. 8G) instead of zram; "
            "refused on eMMC/SD.", "--swap"),
    Setting("swap_path", str, SWAP_FILE, _text(_PATH, "an absolute path", False), "Where the swap file goes "
            "(default {default}; put it on NVMe).", "--swap-path"),
    Setting("force_swap_on_sd", bool, False, _bool, "Allow --swap on eMMC/SD (it wears the card, and a model that "
            "swaps there crawls).", "--force-swap-on-sd"),
    # the board + server metrics exporter (edgekit.exporter, edgekit.metrics)
    Setting("metrics", bool, True, _bool, "Do not install the board + server metrics exporter.", "--no-metrics",
            negated=True),
    Setting("metrics_port", int, 9838, _int(1, 65535), "Port of the metrics exporter (default {default}).",
            "--metrics-port"),
    Setting("metrics_host", str, "0.0.0.0", normalize_host, "Address the exporter binds (default {default}, with a "
            "token).", "--metrics-host"),
    Setting("metrics_token", bool, True, _bool, "Exporter without a token (loopback --metrics-host only).",
            "--no-metrics-token", negated=True),
]
DEFAULTS = {s.name: s.default for s in SETTINGS}   # edgekit's defaults (the CLI's help and `sandbox demo` read them)


def from_cli(given: dict[str, Any]) -> dict[str, Any]:
    """Pure: the values of the command line's options (by setting name, None or empty when not given) -> the flags
    `resolve` takes: --no-x flipped to x = False, a repeated -m spread into model (the first) and models."""
    flags: dict[str, Any] = {}
    declared = by_name()
    for name, value in given.items():
        s = declared[name]
        if value is None or (s.repeatable and not value):
            continue
        if s.negated:
            value = not value
        if s.repeat_into:
            items = list(value)
            value = items[0]
            if len(items) > 1:
                flags[s.repeat_into] = tuple(items)
        elif s.type is tuple:
            value = tuple(value)
        flags[name] = value
    return flags


def ansible_argument_spec() -> dict[str, dict[str, Any]]:
    """The argument spec of an Ansible module that provisions (for `AnsibleModule(argument_spec=...)` or an action
    plugin's `validate_argument_spec`): one argument per setting, named as in edgekit.toml, with its type (`bool`,
    `int`, `str`, or `list` of `str`), its default (lists for tuples), `choices` where the setting has a fixed set,
    its plain inventory `aliases`, and `no_log` (True only for secrets). Ansible checks the types; the values are
    still validated by `resolve` (ranges, patterns, the rules that span settings), so pass the module's arguments
    to `resolve` as the inventory layer."""
    types = {bool: "bool", int: "int", str: "str", tuple: "list"}
    spec: dict[str, dict[str, Any]] = {}
    for s in SETTINGS:
        if "ansible" not in s.applies:
            continue
        arg: dict[str, Any] = {"type": types[s.type], "required": False,
                               "default": list(s.default) if s.type is tuple else s.default, "no_log": s.secret}
        if s.type is tuple:
            arg["elements"] = "str"
        if s.choices:
            arg["choices"] = list(s.choices)
        if s.aliases:
            arg["aliases"] = list(s.aliases)
        spec[s.name] = arg
    return spec


@dataclass
class Settings:
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def model_refs(self) -> tuple[str, ...]:
        """Every model the service serves, the default first."""
        if not self.values["models"]:
            return (self.values["model"],)
        return (self.values["model"], *(m for m in self.values["models"] if m != self.values["model"]))

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    def take(self, cls: type, prefix: str = "", **named: Any) -> Any:
        """A typed options dataclass from these settings: each field named like a setting (after `prefix`:
        ExporterOptions.port is metrics_port) gets its value, `named` gives the fields named otherwise, and the
        rest keep the class's defaults. A field no setting fills and `named` lacks is the class's own (timeouts)."""
        taken = {f.name: self.values[prefix + f.name] for f in dataclass_fields(cls)
                 if f.init and prefix + f.name in self.values and f.name not in named}
        return cls(**taken, **named)


def by_name() -> dict[str, Setting]:
    """The declaration by setting name (read each time: a test may declare one more)."""
    return {s.name: s for s in SETTINGS}


def _where(name: str, source: str) -> str:
    if source == "flag":
        flag = by_name()[name].flag or next((f"{s.flag} (repeated)" for s in SETTINGS if s.repeat_into == name), None)
        if flag:
            return f"{flag} (flag)"
    return f"{name} ({source})"


def inventory_keys() -> dict[str, tuple[str, bool]]:
    """Every key an inventory may use -> (the setting it sets, whether it holds the opposite: no_api_key)."""
    keys = {}
    for s in SETTINGS:
        keys[s.name] = (s.name, False)
        keys.update({a: (s.name, False) for a in s.aliases})
        if s.negated_alias:
            keys[s.negated_alias] = (s.name, True)
    return keys


def _unknown(key: str, source: str) -> UsageError:
    known = list(inventory_keys())
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return UsageError(f"unknown setting {key!r} ({source})",
                      hint=(f"did you mean {close[0]!r}? " if close else "") + "settings: " +
                      ", ".join(s.name for s in SETTINGS) + " (docs/settings.md)")


def resolve(flags: dict[str, Any], inventory: dict[str, Any] | None = None, inventory_source: str = "inventory"
            ) -> Settings:
    """Merge defaults < inventory < flags, validate every value once, and apply the rules that span settings.
    Raises UsageError (exit 2) naming the setting and where it came from. `flags` are by setting name (None: not
    given); a name no setting declares is a bug in the caller and raises TypeError, never dropped."""
    declared = by_name()
    values = {s.name: s.default for s in SETTINGS}
    sources = {s.name: "default" for s in SETTINGS}
    keys = inventory_keys()
    for key, value in (inventory or {}).items():
        if key not in keys:
            raise _unknown(key, inventory_source)
        name, opposite = keys[key]
        if opposite:
            try:
                value = not _bool(value)
            except ValueError as e:
                raise UsageError(f"{key} ({inventory_source}): {e}", hint=f"{key} = true or false") from None
        values[name], sources[name] = value, inventory_source
    undeclared = sorted(set(flags) - set(declared))
    if undeclared:
        raise TypeError(f"resolve() got flags no setting declares: {', '.join(undeclared)} (edgekit/settings.py)")
    for name, value in flags.items():
        if value is not None:
            values[name], sources[name] = value, "flag"
    for f in SETTINGS:
        try:
            values[f.name] = f.check(values[f.name])
        except (ValueError, TypeError) as e:
            raise UsageError(f"{_where(f.name, sources[f.name])}: {e}",
                             hint=_hint(f.name)) from None
    s = Settings(values, sources)
    if not s.api_key and not is_loopback(s.host):
        where = _where("host", sources["host"])
        raise UsageError(f"serving without an API key is allowed only on loopback, but the server would listen on "
                         f"{s.host} ({where}): anyone who reaches it could use it",
                         hint="keep the generated API key, or bind locally: --no-api-key --host 127.0.0.1")
    if s.models:
        if sources["model"] != "default" and s.model not in s.models:
            raise UsageError(f"{_where('model', sources['model'])} is {s.model}, which is not one of the models "
                             f"({', '.join(s.models)})", hint="the default model is one of the set: list it there too")
        if sources["model"] == "default":
            values["model"] = s.models[0]                       # the first of the set is the default
        if s.model_url:
            raise UsageError("--model-url installs one model by URL; it cannot be combined with several models",
                             hint="provision the model by URL on its own, or add it to the catalog")
    elif s.models_max is not None:
        raise UsageError(f"{_where('models_max', sources['models_max'])} applies to several models (router mode)",
                         hint="give -m more than once (or `models = [...]` in the inventory)")
    if s.draft and s.models:
        raise UsageError(f"{_where('draft', sources['draft'])} drafts for one model; router mode (several models) "
                         "does not take one yet", hint="serve the model and its draft on their own: -m NAME --draft D")
    if s.lora and s.models:
        raise UsageError(f"{_where('lora', sources['lora'])} is served with one model; router mode (several models) "
                         "does not take one yet", hint="serve the model and its adapter on their own: -m NAME --lora F")
    if s.draft and s.spec_type:
        raise UsageError(f"{_where('spec_type', sources['spec_type'])} is draft-free speculation; with "
                         f"{_where('draft', sources['draft'])} the draft model speculates",
                         hint="give one of --draft or --spec-type")
    if s.metrics and s.metrics_port == s.port:
        raise UsageError(f"{_where('metrics_port', sources['metrics_port'])} is the server's port {s.port}",
                         hint="choose another with --metrics-port (default 9838)")
    if s.metrics and not s.metrics_token and not is_loopback(s.metrics_host):
        raise UsageError(f"metrics without a token are allowed only on loopback, but the exporter would listen on "
                         f"{s.metrics_host} ({_where('metrics_host', sources['metrics_host'])})",
                         hint="keep the token, or bind locally: --no-metrics-token --metrics-host 127.0.0.1")
    if s.sha256 and not s.model_url:
        raise UsageError(f"{_where('sha256', sources['sha256'])} checks a --model-url download",
                         hint="pass --model-url with it, or leave --sha256 out for a catalog model")
    return s


def _hint(name: str) -> str:
    return {
        "host": "an IP address or hostname, e.g. --host 127.0.0.1",
        "port": "a port 1-65535, e.g. --port 8080",
        "ctx": "a context size in tokens, e.g. --ctx 4096",
        "parallel": "at least one slot, e.g. --parallel 2",
        "cache_type_kv": "--cache-type " + "|".join(CACHE_TYPES),
        "fetch_on": "--fetch-on auto|device|controller",
        "cmake_flags": "pass --cmake-flag -DNAME=VALUE",
        "model": "see `edgekit models list`",
        "models": "see `edgekit models list`",
        "cuda_arch": "use a form like 87, compute_87, sm_87 or 8.7",
        "cache_ram_mib": "a prompt-cache bound in MiB, 0 to turn it off, e.g. --cache-ram 512 (default: from the fit)",
        "sleep_idle_seconds": "seconds without requests before the server unloads the model, e.g. "
                              "--sleep-idle-seconds 600 (leave it out: never)",
        "cors_origin": "one origin, e.g. --cors-origin http://dashboard.lan:3000, or --cors-origin localhost",
    }.get(name, f"see `edgekit provision --help` ({by_name()[name].flag or name})")
