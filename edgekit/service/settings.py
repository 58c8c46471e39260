"""The llama-server service's settings and their rendering through the ONE jinja2 template set.

Variables carry the `edgekit_` prefix because the same templates serve the Ansible role (ansible/roles/edgekit),
whose defaults/main.yml must equal DEFAULTS here (a test compares them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from edgekit.layout import API_KEY_PATH, ENV_PATH, MODELS_DIR, PREFIX, PRESET_PATH, UNIT_NAME
from edgekit.settings import DEFAULTS as SETTINGS
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

DEFAULTS: dict[str, Any] = {
    "edgekit_managed_marker": "Managed by edgekit; local edits are overwritten.",
    "edgekit_unit_name": UNIT_NAME,
    "edgekit_env_file": ENV_PATH,
    "edgekit_prefix": PREFIX,
    "edgekit_service_user": "edgekit",
    "edgekit_service_groups": ["video", "render"],
    "edgekit_restart_sec": 2,
    "edgekit_memory_max": "90%",
    "edgekit_private_devices": False,
    "edgekit_device_allow": [],
    "edgekit_model_name": "",
    "edgekit_model_path": "",
    "edgekit_host": SETTINGS["host"],
    "edgekit_port": SETTINGS["port"],
    "edgekit_ctx": 4096,
    "edgekit_parallel": SETTINGS["parallel"],
    "edgekit_gpu_layers": 999,
    "edgekit_flash_attn": "auto",
    "edgekit_threads": None,
    "edgekit_chat_template": None,
    "edgekit_cache_type_kv": None,
    "edgekit_cache_ram_mib": None,    # the prompt-cache bound (--cache-ram), from the fit
    "edgekit_sleep_idle_seconds": None,
    "edgekit_draft_model_path": None, # speculative decoding: the draft model's file (same vocabulary as the model)
    "edgekit_spec_type": None,        # draft-free speculation: ngram-simple, ngram-map-k, ngram-mod, ...
    "edgekit_lora": None,             # a LoRA adapter served with the model: PATH:SCALE
    "edgekit_api_key_file": API_KEY_PATH,
    "edgekit_cors_origin": SETTINGS["cors_origin"],
    "edgekit_models": [],             # router mode: [{name, path, ctx, chat_template, sampling}], the default first
    "edgekit_models_max": None,
    "edgekit_models_preset": PRESET_PATH,
}
# catalog sampling keys -> llama-server arguments (a router preset's keys)
SAMPLING_ARGS = {"temperature": "temp", "top_k": "top-k", "top_p": "top-p", "repeat_penalty": "repeat-penalty",
                 "min_p": "min-p"}


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(template: str, variables: dict[str, Any]) -> str:
    """Render one of edgekit/templates/*.j2 with DEFAULTS overridden by `variables`."""
    return _env().get_template(template).render({**DEFAULTS, **variables})


def parse_env(text: str) -> dict[str, str]:
    """Pure: the KEY=VALUE lines of a rendered env file (comments skipped)."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def render_unit(variables: dict[str, Any]) -> str:
    return render("llama-server.service.j2", variables)


def render_env(variables: dict[str, Any]) -> str:
    return render("llama-server.env.j2", variables)


def render_preset(variables: dict[str, Any]) -> str:
    return render("models.ini.j2", variables)


def preset_models(preset: str) -> list[str]:
    """Pure: the model sections of router presets, in order (the default first when edgekit wrote them)."""
    return [line.strip()[1:-1] for line in preset.splitlines()
            if line.strip().startswith("[") and line.strip().endswith("]") and line.strip() != "[*]"]


def router_model(*, name: str, path: str, ctx: int, chat_template: str | None, sampling: dict) -> dict[str, Any]:
    """One model of a router preset: its file, context, chat template and sampling defaults (llama-server args)."""
    return {"name": name, "path": path, "ctx": ctx, "chat_template": chat_template,
            "sampling": {SAMPLING_ARGS[k]: v for k, v in sampling.items() if k in SAMPLING_ARGS}}


def service_variables(*, model_name: str, model_path: str, ctx: int, port: int, host: str, gpu: bool,
                      api_key: bool, parallel: int, threads: int | None, chat_template: str | None,
                      cache_type_kv: str | None, groups: list[str], models: list[dict] | None = None,
                      models_max: int | None = None, cache_ram_mib: int | None = None,
                      sleep_idle_seconds: int | None = None, spec_type: str | None = None,
                      draft: str | None = None, cors_origin: str | None = None,
                      lora: str | None = None) -> dict[str, Any]:
    """The template variables for one device: GPU offload and device access only where there is a GPU. With
    `models` (router_model each, two or more) the service is llama-server's router over them."""
    return {
        "edgekit_models": models or [], "edgekit_models_max": models_max,
        "edgekit_model_name": model_name, "edgekit_model_path": model_path, "edgekit_ctx": ctx,
        "edgekit_port": port, "edgekit_host": host, "edgekit_parallel": parallel, "edgekit_threads": threads,
        "edgekit_gpu_layers": 999 if gpu else 0, "edgekit_private_devices": not gpu,
        "edgekit_service_groups": groups, "edgekit_chat_template": chat_template,
        "edgekit_cache_type_kv": cache_type_kv, "edgekit_api_key_file": API_KEY_PATH if api_key else None,
        "edgekit_cache_ram_mib": cache_ram_mib, "edgekit_sleep_idle_seconds": sleep_idle_seconds,
        "edgekit_spec_type": spec_type, "edgekit_draft_model_path": draft,
        "edgekit_cors_origin": cors_origin,
        "edgekit_spec_type": spec_type, "edgekit_draft_model_path": draft, "edgekit_lora": lora,
    }


def _example() -> dict[str, Any]:
    """The default deployment on an 8 GB Orin Nano with CUDA: the quant, context and prompt-cache bound its fit
    picks for the default model (`edgekit models fit chinese-alpaca-2-1.3b --board orin-nano-8gb` says the same)."""
    from edgekit.models import catalog, fit

    _, total = fit.board_total("orin-nano-8gb")
    entry, quant = catalog.lookup(SETTINGS["model"], None, total)
    ctx = fit.default_ctx(entry, quant, total)
    report = fit.check_entry(entry, quant, ctx, total)
    return service_variables(
        model_name=entry.name, model_path=f"{MODELS_DIR}/{entry.name}/{quant.file}", ctx=ctx, port=8080,
        host="0.0.0.0", gpu=True, api_key=True, parallel=2, threads=None, chat_template="llama2",
        cache_type_kv=None, groups=["video", "render"], cache_ram_mib=report.cache_ram_mib)


# The unit and env as rendered for the default deployment; systemd/ holds exactly these for people who read units,
# and a test keeps them equal.
EXAMPLE = _example()
