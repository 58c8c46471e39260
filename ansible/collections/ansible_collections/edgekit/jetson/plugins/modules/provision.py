#!/usr/bin/python
# Documents the action plugin plugins/action/provision.py. Generated from edgekit.settings: tests/test_ansible.py
# fails when it is stale; regenerate with `python3 -m tests.test_ansible`.

from __future__ import annotations

DOCUMENTATION = r"""
module: provision
short_description: Provision llama-server on a Jetson with edgekit's own steps
description:
- 'Runs C(edgekit provision) through the play''s connection: preflight, the build (or O(build_pack)), the model,
  the hardened systemd service, the metrics exporter; each a step that compares the device with the settings and
  changes only the difference, under the device''s edgekit lock.'
- A setting not given as an argument comes from the host's C(edgekit_<setting>) variable (the inventory C(edgekit
  provision --inventory) reads), else edgekit's default. All of them are validated by edgekit's settings model on
  the controller before anything connects.
- 'Check mode is C(edgekit provision --dry-run): each step that would change is printed with its exact commands.
  With C(--diff) the env file and unit changes are shown.'
- Needs the edgekit Python package on the controller, and C(become) (root) on the device.
version_added: 1.0.0
author:
- edgekit
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  action:
    support: full
options:
  model:
    description:
    - edgekit's C(model) setting (C(edgekit provision --model)).
    - 'Unset: the host''s C(edgekit_model) variable, else edgekit''s default C(''chinese-alpaca-2-1.3b'').'
    type: str
    aliases:
    - model_name
  models:
    description:
    - edgekit's C(models) setting.
    - 'Unset: the host''s C(edgekit_models) variable, else edgekit''s default C([]).'
    type: list
    elements: str
    aliases:
    - model_names
  models_max:
    description:
    - edgekit's C(models_max) setting (C(edgekit provision --models-max)).
    - 'Unset: the host''s C(edgekit_models_max) variable, else edgekit''s default C(None).'
    type: int
  ctx:
    description:
    - edgekit's C(ctx) setting (C(edgekit provision --ctx)).
    - 'Unset: the host''s C(edgekit_ctx) variable, else edgekit''s default C(None).'
    type: int
  port:
    description:
    - edgekit's C(port) setting (C(edgekit provision --port)).
    - 'Unset: the host''s C(edgekit_port) variable, else edgekit''s default C(8080).'
    type: int
  host:
    description:
    - edgekit's C(host) setting (C(edgekit provision --host)).
    - 'Unset: the host''s C(edgekit_host) variable, else edgekit''s default C(''0.0.0.0'').'
    type: str
  api_key:
    description:
    - edgekit's C(api_key) setting (C(edgekit provision --no-api-key)).
    - 'Unset: the host''s C(edgekit_api_key) variable, else edgekit''s default C(True).'
    type: bool
  parallel:
    description:
    - edgekit's C(parallel) setting (C(edgekit provision --parallel)).
    - 'Unset: the host''s C(edgekit_parallel) variable, else edgekit''s default C(2).'
    type: int
  threads:
    description:
    - edgekit's C(threads) setting (C(edgekit provision --threads)).
    - 'Unset: the host''s C(edgekit_threads) variable, else edgekit''s default C(None).'
    type: int
  cache_type_kv:
    description:
    - edgekit's C(cache_type_kv) setting (C(edgekit provision --cache-type)).
    - 'Unset: the host''s C(edgekit_cache_type_kv) variable, else edgekit''s default C(None).'
    type: str
    aliases:
    - cache_type
  llama_src:
    description:
    - edgekit's C(llama_src) setting (C(edgekit provision --llama-src)).
    - 'Unset: the host''s C(edgekit_llama_src) variable, else edgekit''s default C(None).'
    type: str
  cpu:
    description:
    - edgekit's C(cpu) setting (C(edgekit provision --cpu)).
    - 'Unset: the host''s C(edgekit_cpu) variable, else edgekit''s default C(False).'
    type: bool
  cuda_arch:
    description:
    - edgekit's C(cuda_arch) setting (C(edgekit provision --cuda-arch)).
    - 'Unset: the host''s C(edgekit_cuda_arch) variable, else edgekit''s default C(None).'
    type: str
  jobs:
    description:
    - edgekit's C(jobs) setting (C(edgekit provision --jobs)).
    - 'Unset: the host''s C(edgekit_jobs) variable, else edgekit''s default C(None).'
    type: int
    aliases:
    - build_jobs
  cmake_flags:
    description:
    - edgekit's C(cmake_flags) setting (C(edgekit provision --cmake-flag)).
    - 'Unset: the host''s C(edgekit_cmake_flags) variable, else edgekit''s default C([]).'
    type: list
    elements: str
  cpu_level:
    description:
    - edgekit's C(cpu_level) setting (C(edgekit provision --cpu-level)).
    - 'Unset: the host''s C(edgekit_cpu_level) variable, else edgekit''s default C(None).'
    type: str
  fetch_on:
    description:
    - edgekit's C(fetch_on) setting (C(edgekit provision --fetch-on)).
    - 'Unset: the host''s C(edgekit_fetch_on) variable, else edgekit''s default C(''auto'').'
    type: str
  hf_endpoint:
    description:
    - edgekit's C(hf_endpoint) setting (C(edgekit provision --hf-endpoint)).
    - 'Unset: the host''s C(edgekit_hf_endpoint) variable, else edgekit''s default C(None).'
    type: str
  model_url:
    description:
    - edgekit's C(model_url) setting (C(edgekit provision --model-url)).
    - 'Unset: the host''s C(edgekit_model_url) variable, else edgekit''s default C(None).'
    type: str
  sha256:
    description:
    - edgekit's C(sha256) setting (C(edgekit provision --sha256)).
    - 'Unset: the host''s C(edgekit_sha256) variable, else edgekit''s default C(None).'
    type: str
    aliases:
    - model_sha256
  force:
    description:
    - edgekit's C(force) setting (C(edgekit provision --force)).
    - 'Unset: the host''s C(edgekit_force) variable, else edgekit''s default C(False).'
    type: bool
  allow_unpinned:
    description:
    - edgekit's C(allow_unpinned) setting (C(edgekit provision --allow-unpinned)).
    - 'Unset: the host''s C(edgekit_allow_unpinned) variable, else edgekit''s default C(False).'
    type: bool
  skip_deps:
    description:
    - edgekit's C(skip_deps) setting (C(edgekit provision --skip-deps)).
    - 'Unset: the host''s C(edgekit_skip_deps) variable, else edgekit''s default C(False).'
    type: bool
  rollback:
    description:
    - edgekit's C(rollback) setting (C(edgekit provision --no-rollback)).
    - 'Unset: the host''s C(edgekit_rollback) variable, else edgekit''s default C(True).'
    type: bool
  lock_file:
    description:
    - edgekit's C(lock_file) setting (C(edgekit provision --lock-file)).
    - 'Unset: the host''s C(edgekit_lock_file) variable, else edgekit''s default C(None).'
    type: str
  power_mode:
    description:
    - edgekit's C(power_mode) setting (C(edgekit provision --power-mode)).
    - 'Unset: the host''s C(edgekit_power_mode) variable, else edgekit''s default C(None).'
    type: str
  clocks:
    description:
    - edgekit's C(clocks) setting (C(edgekit provision --clocks)).
    - 'Unset: the host''s C(edgekit_clocks) variable, else edgekit''s default C(None).'
    type: str
  headless:
    description:
    - edgekit's C(headless) setting (C(edgekit provision --headless)).
    - 'Unset: the host''s C(edgekit_headless) variable, else edgekit''s default C(False).'
    type: bool
  swap:
    description:
    - edgekit's C(swap) setting (C(edgekit provision --swap)).
    - 'Unset: the host''s C(edgekit_swap) variable, else edgekit''s default C(None).'
    type: str
  swap_path:
    description:
    - edgekit's C(swap_path) setting (C(edgekit provision --swap-path)).
    - 'Unset: the host''s C(edgekit_swap_path) variable, else edgekit''s default C(''/swapfile'').'
    type: str
  force_swap_on_sd:
    description:
    - edgekit's C(force_swap_on_sd) setting (C(edgekit provision --force-swap-on-sd)).
    - 'Unset: the host''s C(edgekit_force_swap_on_sd) variable, else edgekit''s default C(False).'
    type: bool
  metrics:
    description:
    - edgekit's C(metrics) setting (C(edgekit provision --no-metrics)).
    - 'Unset: the host''s C(edgekit_metrics) variable, else edgekit''s default C(True).'
    type: bool
  metrics_port:
    description:
    - edgekit's C(metrics_port) setting (C(edgekit provision --metrics-port)).
    - 'Unset: the host''s C(edgekit_metrics_port) variable, else edgekit''s default C(9838).'
    type: int
  metrics_host:
    description:
    - edgekit's C(metrics_host) setting (C(edgekit provision --metrics-host)).
    - 'Unset: the host''s C(edgekit_metrics_host) variable, else edgekit''s default C(''0.0.0.0'').'
    type: str
  metrics_token:
    description:
    - edgekit's C(metrics_token) setting (C(edgekit provision --no-metrics-token)).
    - 'Unset: the host''s C(edgekit_metrics_token) variable, else edgekit''s default C(True).'
    type: bool
  build_pack:
    description:
    - A llama.cpp build packed by edgekit on a device of the same kind (NAME.tar.gz with NAME.json beside it, as
      edgekit's fleet build leaves them in its cache under C(builds/)).
    - 'Checked member by member on the controller before anything connects, installed, proven to run on the device
      (the gate), then made current. Unset: llama.cpp is built on the device.'
    type: path
"""

EXAMPLES = r"""
- name: Serve gemma3-270m (other settings from the hosts' edgekit_* variables)
  edgekit.jetson.provision:
    model: gemma3-270m
    ctx: 4096
    power_mode: max

- name: Install a build made once on a device of the same kind
  edgekit.jetson.provision:
    build_pack: ~/.cache/edgekit/builds/b11312-6e1e5151.tar.gz
"""

RETURN = r"""
steps:
  description: Every step's result, as C(edgekit provision --json) reports them.
  returned: always
  type: list
  elements: dict
url:
  description: Where the server answers.
  returned: success, not in check mode
  type: str
model:
  description: The default model served.
  returned: success, not in check mode
  type: str
api_key_file:
  description: The API key's copy on the controller.
  returned: success, with an API key
  type: str
"""
