"""The ONE settings model for a provision: command-line flags, inventory values and defaults, merged and then
validated once, before anything connects. Every value remembers where it came from, so an error names the
setting and its source ("--ctx (flag)", "ctx (inventory edgekit.toml, host orin-1)", "default").

Precedence: an explicit flag > the host's inventory settings (host > group > [defaults]) > edgekit's defaults.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from edgekit.errors import UsageError
from edgekit.layout import SWAP_FILE
from edgekit.facts.cuda import parse_arch_override

CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
FETCH_ON = ("auto", "device", "controller")
MAX_CTX = 1 << 20
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(:[A-Za-z0-9_.-]{1,32})?$")
_CMAKE = re.compile(r"^-D[A-Za-z_][A-Za-z0-9_]*(:[A-Z]+)?=[^\s\x00-\x1f\x7f]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Field:
    name: str
    flag: str | None                   # the provision flag that sets it (None: inventory only)
    default: Any
    check: Callable[[Any], Any]        # returns the normalised value or raises ValueError(reason)
    aliases: tuple[str, ...] = ()      # inventory spellings (Ansible's variable names without `edgekit_`)


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


FIELDS = [
    Field("model", "--model", "chinese-alpaca-2-1.3b", _text(_MODEL, "a catalog NAME or NAME:QUANT", False),
          ("model_name",)),
    Field("models", None, (), _models, ("model_names",)),    # -m given more than once; inventory `models = [...]`
    Field("models_max", "--models-max", None, _int(1, 64, optional=True)),
    Field("ctx", "--ctx", None, _int(1, MAX_CTX, optional=True)),
    Field("port", "--port", 8080, _int(1, 65535)),
    Field("host", "--host", "0.0.0.0", normalize_host),
    Field("api_key", "--no-api-key", True, _bool, ("no_api_key",)),
    Field("parallel", "--parallel", 2, _int(1, 256)),
    Field("threads", "--threads", None, _int(1, 1024, optional=True)),
    Field("cache_type_kv", "--cache-type", None, _choice(CACHE_TYPES), ("cache_type",)),
    Field("llama_src", "--llama-src", None, _text()),
    Field("cpu", "--cpu", False, _bool),
    Field("cuda_arch", "--cuda-arch", None, _cuda_arch),
    Field("jobs", "--jobs", None, _int(1, 1024, optional=True), ("build_jobs",)),
    Field("cmake_flags", "--cmake-flag", (), _cmake_flags),
    Field("cpu_level", "--cpu-level", None, _text(re.compile(r"^[A-Za-z0-9.+_-]+$"), "a CPU level name")),
    Field("fetch_on", "--fetch-on", "auto", _choice(FETCH_ON, optional=False)),
    Field("hf_endpoint", "--hf-endpoint", None, _url),
    Field("model_url", "--model-url", None, _url),
    Field("sha256", "--sha256", None, _sha256, ("model_sha256",)),
    Field("force", "--force", False, _bool),
    Field("allow_unpinned", "--allow-unpinned", False, _bool),
    Field("skip_deps", "--skip-deps", False, _bool),
    Field("rollback", "--no-rollback", True, _bool),
    Field("lock_file", "--lock-file", None, _text()),
    # Jetson tuning (edgekit.tuning)
    Field("power_mode", "--power-mode", None, _text(re.compile(r"^[A-Za-z0-9_.+-]{1,64}$"), "a power mode's name")),
    Field("clocks", "--clocks", None, _choice(("max",))),
    Field("headless", "--headless", False, _bool),
    Field("swap", "--swap", None, _text(re.compile(r"^[1-9][0-9]{0,5}(\.[0-9]+)?[KMGT]i?B?$", re.I), "a size like 8G")),
    Field("swap_path", "--swap-path", SWAP_FILE, _text(re.compile(r"^/[A-Za-z0-9._/-]{1,200}$"), "an absolute path",
                                                          False)),
    Field("force_swap_on_sd", "--force-swap-on-sd", False, _bool),
    # the board + server metrics exporter (edgekit.exporter, edgekit.metrics)
    Field("metrics", "--no-metrics", True, _bool),
    Field("metrics_port", "--metrics-port", 9838, _int(1, 65535)),
    Field("metrics_host", "--metrics-host", "0.0.0.0", normalize_host),
    Field("metrics_token", "--no-metrics-token", True, _bool),
]
BY_NAME = {f.name: f for f in FIELDS}
DEFAULTS = {f.name: f.default for f in FIELDS}   # edgekit's defaults (the CLI's help and `sandbox demo` read them)
ALIASES = {a: f.name for f in FIELDS for a in f.aliases}
# Ansible-role variables an inventory may carry that only the role uses (edgekit builds, packs and derives them).
ANSIBLE_ONLY = {"build_tarball", "build_from_source", "model_file", "model_path", "chat_template", "api_key",
                "api_key_file", "llama_version", "llama_commit", "llama_repo", "llama_src_archive",
                "llama_src_inner", "build_backend", "model_timeout", "gpu_layers", "flash_attn"}


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


def _where(name: str, source: str) -> str:
    f = BY_NAME[name]
    return f"{f.flag} (flag)" if source == "flag" and f.flag else f"{name} ({source})"


def resolve(flags: dict[str, Any], inventory: dict[str, Any] | None = None, inventory_source: str = "inventory"
            ) -> Settings:
    """Merge defaults < inventory < flags, validate every value once, and apply the rules that span settings.
    Raises UsageError (exit 2) naming the setting and where it came from."""
    values = {f.name: f.default for f in FIELDS}
    sources = {f.name: "default" for f in FIELDS}
    for key, value in (inventory or {}).items():
        if key in ANSIBLE_ONLY:
            continue
        name = ALIASES.get(key, key)
        if name not in BY_NAME:
            raise UsageError(f"unknown setting {key!r} ({inventory_source})",
                             hint="inventory settings: " + ", ".join(sorted(BY_NAME)))
        if name == "api_key" and key == "no_api_key":
            try:
                value = not _bool(value)
            except ValueError as e:
                raise UsageError(f"no_api_key ({inventory_source}): {e}", hint="no_api_key = true or false") from None
        values[name], sources[name] = value, inventory_source
    for name, value in flags.items():
        if value is not None and name in BY_NAME:
            values[name], sources[name] = value, "flag"
    for f in FIELDS:
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
    }.get(name, f"see `edgekit provision --help` ({BY_NAME[name].flag or name})")
