"""The service's rendered unit and settings (one template set), and provision's option checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.errors import UsageError
from edgekit.service.settings import EXAMPLE, render_env, render_unit, service_variables
from tests.conftest import run_cli_inprocess as run_cli

ROOT = Path(__file__).resolve().parent.parent


def variables(**over):
    base = dict(model_name="m", model_path="/opt/edgekit/models/m/m.gguf", ctx=2048, port=8088, host="0.0.0.0",
                gpu=False, api_key=True, parallel=2, threads=None, chat_template=None, cache_type_kv=None, groups=[])
    return service_variables(**{**base, **over})


def test_systemd_folder_holds_the_rendered_defaults():
    assert (ROOT / "systemd/edgekit-llama-server.service").read_text() == render_unit(EXAMPLE)
    assert (ROOT / "systemd/llama-server.env").read_text() == render_env(EXAMPLE)


def test_unit_is_hardened_and_restarts():
    unit = render_unit(variables())
    for line in ("Restart=on-failure", "After=network-online.target", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "ReadOnlyPaths=/opt/edgekit",
                 "MemoryMax=90%", "User=edgekit",
                 "ExecStart=/opt/edgekit/llama.cpp/current/bin/llama-server $EDGEKIT_SERVER_ARGS",
                 "WantedBy=multi-user.target"):
        assert line in unit.splitlines(), line


def test_cpu_host_gets_private_devices_gpu_host_keeps_gpu_reachable():
    cpu = render_unit(variables(gpu=False)).splitlines()
    gpu = render_unit(variables(gpu=True, groups=["video", "render"])).splitlines()
    assert "PrivateDevices=yes" in cpu and "PrivateDevices=yes" not in gpu
    assert "SupplementaryGroups=video render" in gpu
    assert "MemoryDenyWriteExecute=yes" in cpu and "MemoryDenyWriteExecute=yes" not in gpu
    assert "LLAMA_ARG_N_GPU_LAYERS=999" in render_env(variables(gpu=True)).splitlines()
    assert "LLAMA_ARG_N_GPU_LAYERS=0" in render_env(variables(gpu=False)).splitlines()


def test_env_always_names_the_port_and_key_file():
    env = render_env(variables(port=9001, chat_template="llama3", threads=4)).splitlines()
    assert "LLAMA_ARG_PORT=9001" in env
    assert "LLAMA_ARG_API_KEY_FILE=/etc/edgekit/api-key" in env
    assert "LLAMA_ARG_CHAT_TEMPLATE=llama3" in env and "LLAMA_ARG_THREADS=4" in env
    assert "LLAMA_ARG_ENDPOINT_METRICS=1" in env
    no_key = render_env(variables(api_key=False)).splitlines()
    assert not any(line.startswith("LLAMA_ARG_API_KEY") for line in no_key)


def test_env_states_origins_credentials_and_tools():
    """No other web origin by default (not even pages on the device), never credentials, tools and MCP proxy off."""
    default = render_env(variables()).splitlines()
    for line in ("LLAMA_ARG_CORS_ORIGINS=", "LLAMA_ARG_CORS_CREDENTIALS=0", "LLAMA_ARG_CORS_HEADERS=Authorization,*",
                 "LLAMA_ARG_AGENT=0", "LLAMA_ARG_UI_MCP_PROXY=0"):
        assert line in default, line
    allowed = render_env(variables(cors_origin="http://dash.lan:3000")).splitlines()
    assert "LLAMA_ARG_CORS_ORIGINS=http://dash.lan:3000" in allowed and "LLAMA_ARG_CORS_CREDENTIALS=0" in allowed
    router = render_env(variables(models=[{"name": "a"}, {"name": "b"}], models_max=2)).splitlines()
    assert "LLAMA_ARG_CORS_ORIGINS=" in router and "LLAMA_ARG_AGENT=0" in router


def test_no_api_key_needs_explicit_local_bind():
    from edgekit.provision import options
    from edgekit.settings import resolve

    flags = dict(model="gemma3-270m", cpu=True, allow_unpinned=True)
    with pytest.raises(UsageError, match="only on loopback"):
        resolve({**flags, "api_key": False})
    opts = options(resolve({**flags, "api_key": False, "host": "127.0.0.1"}))
    assert opts.service.api_key is False and opts.service.host == "127.0.0.1"
    with pytest.raises(UsageError, match="--fetch-on"):
        resolve({**flags, "fetch_on": "ftp"})


def test_cli_no_api_key_on_lan_is_exit_2():
    res = run_cli("provision", "local", "--no-api-key", "--dry-run")
    assert res.returncode == 2
    assert "--host 127.0.0.1" in res.stderr


def test_gpu_follows_the_build_stamps_backend():
    from edgekit.service.steps import uses_gpu

    assert uses_gpu({"backend": "cuda", "cuda_arch": "87"}) is True
    assert uses_gpu({"backend": "cpu"}) is False and uses_gpu({}) is False
