"""Options more than one command takes: one definition each (flag, short flag, help), so commands cannot drift.
The settings' options (provision's, and the few other commands share) are derived from edgekit/settings.py.

Each is an `Annotated` type; a command gives the default it needs: `dry_run: DryRun = False`, and `cpu: Cpu = None`
in `provision`, where None means "not given" (the inventory or edgekit's default decides).
"""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any, Callable, Optional

import typer

from edgekit import settings
from edgekit.settings import Setting

Target = Annotated[str, typer.Argument(help="[user@]host[:port], an ssh_config alias, or `local`.")]
DeviceOption = Annotated[Optional[str], typer.Option("--target", "-t",
                                                     help="The device: [user@]host[:port] or an ssh_config alias.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan (the commands that would run); change nothing.")]


def _typer_option(s: Setting, annotated: bool = False) -> Any:
    """The typer option of a declared setting; as a default, None: not given (the inventory or edgekit's default
    decides). Inside `Annotated` typer takes no default (the command gives it)."""
    decls = [s.flag, *([s.short] if s.short else [])]
    return typer.Option(*([] if annotated else [None]), *decls, help=s.help_text,
                        **({"envvar": s.envvar} if s.envvar else {}))


def _annotation(s: Setting) -> Any:
    return Optional[list[str]] if s.repeatable else Optional[s.type]


def setting_option(name: str) -> Any:
    """`Annotated[type, typer.Option(...)]` of one declared setting, for a command that takes it outside
    `provision` (`edgekit build --cpu`): the same flag and help as provision's, from edgekit/settings.py."""
    s = settings.by_name()[name]
    return Annotated[_annotation(s), _typer_option(s, annotated=True)]


def takes_settings(command: Callable) -> Callable:
    """Give a command every setting edgekit/settings.py puts on the command line: its `flags` parameter becomes
    one option per declared flag (in the declaration's order, where `flags` stands), and the command is called
    with `flags`: the given ones by setting name, ready for `settings.resolve` (settings.from_cli)."""
    signature = inspect.signature(command, eval_str=True)
    cli = [s for s in settings.SETTINGS if "cli" in s.applies]
    params = []
    for p in signature.parameters.values():
        if p.name != "flags":
            params.append(p)
            continue
        taken = set(signature.parameters)
        clash = [s.name for s in cli if s.name in taken]
        if clash:
            raise TypeError(f"{command.__name__}: parameters named like settings: {clash}")
        params += [inspect.Parameter(s.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=_typer_option(s),
                                     annotation=_annotation(s)) for s in cli]
    names = {s.name for s in cli}

    @functools.wraps(command)
    def with_settings(*args, **kwargs):
        given = {name: kwargs.pop(name, None) for name in names}
        return command(*args, flags=settings.from_cli(given), **kwargs)

    with_settings.__signature__ = signature.replace(parameters=params)
    with_settings.__annotations__ = {p.name: p.annotation for p in params}
    return with_settings


# -- options `build`, `facts` and `models` share with provision: derived from the settings' declaration ----------
LlamaSrc = setting_option("llama_src")
Cpu = setting_option("cpu")
CudaArch = setting_option("cuda_arch")
CpuLevel = setting_option("cpu_level")
CmakeFlag = setting_option("cmake_flags")
Jobs = setting_option("jobs")
SkipDeps = setting_option("skip_deps")
Ctx = setting_option("ctx")
FetchOn = setting_option("fetch_on")
Force = setting_option("force")
AllowUnpinned = setting_option("allow_unpinned")
