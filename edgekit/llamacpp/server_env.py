"""Whether a llama-server build knows every LLAMA_ARG_* variable edgekit writes into the service's env file.

llama.cpp reads only the environment names its options declare (common/arg.cpp `set_env`) and ignores any other
without a word, so a build that lacks one would serve without a setting edgekit reports as applied (a CORS or
tools setting included). The names a build knows are the `(env: NAME)` notes of its own `llama-server --help`
(the fact ServerEnvNames); the names edgekit writes come from rendering the one env template (`names_written`).
The build gate checks them before `current` moves, and every provision (its dry run too) before the env changes.
"""

from __future__ import annotations

from typing import Iterable

from edgekit.errors import UnsuitableDevice
from edgekit.facts.build import parse_env_names
from edgekit.service.settings import parse_env, render_env, router_model, service_variables

def names_written(service=None, router: bool = False) -> list[str]:
    """The LLAMA_ARG_* names the env template writes for these service options (edgekit.service.steps
    ServiceOptions; None: the defaults), in the file's order. What depends on the model or its fit (its chat
    template, the prompt-cache bound) is counted as written, since they may ask for it."""
    from edgekit.service.steps import ServiceOptions           # steps import the build's modules

    opts = service or ServiceOptions()
    models = [router_model(name=n, path=f"/{n}.gguf", ctx=opts.n_ctx or 4096, chat_template=None, sampling={})
              for n in ("a", "b")] if router else None
    variables = service_variables(
        model_name="m", model_path="/m.gguf", ctx=opts.n_ctx or 4096, port=opts.port, host=opts.host, gpu=True,
        api_key=opts.api_key, parallel=opts.parallel, threads=opts.threads, chat_template="chatml",
        cache_type_kv=opts.cache_type_kv, groups=[], models=models, models_max=2 if router else None,
        cache_ram_mib=512, sleep_idle_seconds=opts.sleep_idle_seconds, cors_origin=opts.cors_origin)
    return [name for name in parse_env(render_env(variables)) if name.startswith("LLAMA_ARG_")]


def unknown_names(written: Iterable[str], known: frozenset[str]) -> list[str]:
    """Pure: the names written that the build does not list, in the order written."""
    return [name for name in written if name not in known]


class UnknownServerSetting(UnsuitableDevice):
    """The build's llama-server does not know a variable edgekit would write: refused before anything changes."""

    def __init__(self, message: str, names: list[str], build: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.names = names
        self.build = build


def require_known(known: frozenset[str] | None, written: list[str], build: str, where: str,
                  current: str | None = None, what: str = "build") -> str | None:
    """Pure: raise UnknownServerSetting when the build `build` (its --help read as `known`; None: not built yet)
    lacks a name of `written`; -> what was checked, for the step's report (None when it cannot be known yet)."""
    if known is None:
        return None
    unchanged = f"; the service and `current` ({current}) are unchanged" if current else "; the service is unchanged"
    if not known:
        raise UnknownServerSetting(
            f"the llama.cpp {what} {build} on {where}: its `llama-server --help` lists no LLAMA_ARG_* environment "
            f"variables, so whether it knows the settings edgekit writes cannot be told{unchanged}", [], build,
            hint="run its `bin/llama-server --help` on the device to see why it does not answer; rebuild it with "
                 "`edgekit build`")
    unknown = unknown_names(written, known)
    if unknown:
        them = "it" if len(unknown) == 1 else "them"
        raise UnknownServerSetting(
            f"the llama.cpp {what} {build} on {where} does not know {', '.join(unknown)}: its `llama-server --help` "
            f"lists no such environment variable, so the service would silently run without {them} while edgekit "
            f"reports {them} applied{unchanged}", unknown, build,
            hint="use a llama.cpp that knows it (the pinned version: leave out --llama-src), or leave out the "
                 "setting that writes it (docs/security.md, docs/settings.md)")
    return f"its llama-server knows the {len(written)} LLAMA_ARG_* settings edgekit writes"
