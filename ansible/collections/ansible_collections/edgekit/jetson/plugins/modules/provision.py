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
    - Catalog name, optionally NAME:QUANT (default chinese-alpaca-2-1.3b). Repeat it to serve several models from
      one service (router mode; the first is the default). (C(edgekit provision --model))
    - 'Unset: the host''s C(edgekit_model) variable, else edgekit''s default C(''chinese-alpaca-2-1.3b'').'
    type: str
    aliases:
    - model_name
  models:
    description:
    - Several catalog models served by one service (router mode); the command line gives them as -m repeated.
    - 'Unset: the host''s C(edgekit_models) variable, else edgekit''s default C([]).'
    type: list
    elements: str
    aliases:
    - model_names
  models_max:
    description:
    - 'Router mode: models loaded at once (default: as many as fit this device''s memory together). (C(edgekit provision
      --models-max))'
    - 'Unset: the host''s C(edgekit_models_max) variable, else edgekit''s default C(None).'
    type: int
  ctx:
    description:
    - 'Context length in tokens (default: the model''s recommended one, capped to what fits). (C(edgekit provision
      --ctx))'
    - 'Unset: the host''s C(edgekit_ctx) variable, else edgekit''s default C(None).'
    type: int
  port:
    description:
    - Port llama-server listens on (default 8080). (C(edgekit provision --port))
    - 'Unset: the host''s C(edgekit_port) variable, else edgekit''s default C(8080).'
    type: int
  host:
    description:
    - Address to bind (default 0.0.0.0, with an API key). (C(edgekit provision --host))
    - 'Unset: the host''s C(edgekit_host) variable, else edgekit''s default C(''0.0.0.0'').'
    type: str
  api_key:
    description:
    - 'C(api_key=false) is C(edgekit provision --no-api-key): Serve without a key (loopback --host only).'
    - 'Unset: the host''s C(edgekit_api_key) variable, else edgekit''s default C(True).'
    type: bool
  cors_origin:
    description:
    - 'The one web origin (e.g. http://dashboard.lan:3000, or localhost: pages served from the device) whose pages
      may call the API from a browser (default: none; docs/security.md). (C(edgekit provision --cors-origin))'
    - 'Unset: the host''s C(edgekit_cors_origin) variable, else edgekit''s default C(None).'
    type: str
  llama_src:
    description:
    - 'llama.cpp source: a directory, a .tar.gz (e.g. the llama-cpp-python sdist) or a URL, pushed to the device.
      (C(edgekit provision --llama-src))'
    - 'Unset: the host''s C(edgekit_llama_src) variable, else edgekit''s default C(None).'
    type: str
  cpu:
    description:
    - Build CPU-only on purpose (refused by default without CUDA). (C(edgekit provision --cpu))
    - 'Unset: the host''s C(edgekit_cpu) variable, else edgekit''s default C(False).'
    type: bool
  cuda_arch:
    description:
    - 'GPU arch, e.g. 87 or compute_87 (default: from the device; also CUDA_DOCKER_ARCH). (C(edgekit provision --cuda-arch))'
    - 'Unset: the host''s C(edgekit_cuda_arch) variable, else edgekit''s default C(None).'
    type: str
  cpu_level:
    description:
    - 'CPU instruction level, e.g. x86-64-v3, armv8.2-a+dotprod+fp16 or native (default: the best that passes the
      gate). (C(edgekit provision --cpu-level))'
    - 'Unset: the host''s C(edgekit_cpu_level) variable, else edgekit''s default C(None).'
    type: str
  cmake_flags:
    description:
    - Extra cmake definition -DNAME=VALUE (repeatable; changes the flags hash, so it is a separate build). (C(edgekit
      provision --cmake-flag))
    - 'Unset: the host''s C(edgekit_cmake_flags) variable, else edgekit''s default C([]).'
    type: list
    elements: str
  jobs:
    description:
    - 'Parallel compile jobs (default: from CPUs and RAM). (C(edgekit provision --jobs))'
    - 'Unset: the host''s C(edgekit_jobs) variable, else edgekit''s default C(None).'
    type: int
    aliases:
    - build_jobs
  skip_deps:
    description:
    - Do not apt-get install missing build tools (offline machines that have what they need). (C(edgekit provision
      --skip-deps))
    - 'Unset: the host''s C(edgekit_skip_deps) variable, else edgekit''s default C(False).'
    type: bool
  fetch_on:
    description:
    - 'Who downloads the model: device, controller, or auto (the device when it can reach the source). (C(edgekit
      provision --fetch-on))'
    - 'Unset: the host''s C(edgekit_fetch_on) variable, else edgekit''s default C(''auto'').'
    type: str
    choices:
    - auto
    - device
    - controller
  hf_endpoint:
    description:
    - Hugging Face mirror (also HF_ENDPOINT). (C(edgekit provision --hf-endpoint))
    - 'Unset: the host''s C(edgekit_hf_endpoint) variable, else edgekit''s default C(None).'
    type: str
  model_url:
    description:
    - Fetch the model file from this URL instead. (C(edgekit provision --model-url))
    - 'Unset: the host''s C(edgekit_model_url) variable, else edgekit''s default C(None).'
    type: str
  sha256:
    description:
    - The sha256 the --model-url download must have. (C(edgekit provision --sha256))
    - 'Unset: the host''s C(edgekit_sha256) variable, else edgekit''s default C(None).'
    type: str
    aliases:
    - model_sha256
  allow_unpinned:
    description:
    - Install a model quant that has no pinned commit and sha256 (checked only against the server's X-Linked-Etag).
      (C(edgekit provision --allow-unpinned))
    - 'Unset: the host''s C(edgekit_allow_unpinned) variable, else edgekit''s default C(False).'
    type: bool
  force:
    description:
    - Install a model even if the fit check says it will not fit. (C(edgekit provision --force))
    - 'Unset: the host''s C(edgekit_force) variable, else edgekit''s default C(False).'
    type: bool
  parallel:
    description:
    - Server slots (concurrent requests, default 2). (C(edgekit provision --parallel))
    - 'Unset: the host''s C(edgekit_parallel) variable, else edgekit''s default C(2).'
    type: int
  threads:
    description:
    - CPU threads for llama-server. (C(edgekit provision --threads))
    - 'Unset: the host''s C(edgekit_threads) variable, else edgekit''s default C(None).'
    type: int
  cache_type_kv:
    description:
    - KV cache type, e.g. q8_0 or q4_0 (less memory). (C(edgekit provision --cache-type))
    - 'Unset: the host''s C(edgekit_cache_type_kv) variable, else edgekit''s default C(None).'
    type: str
    choices:
    - f32
    - f16
    - bf16
    - q8_0
    - q4_0
    - q4_1
    - iq4_nl
    - q5_0
    - q5_1
    aliases:
    - cache_type
  cache_ram_mib:
    description:
    - 'Prompt cache in host RAM, MiB (0: off; default: half the headroom the fit leaves, at most llama.cpp''s 8192).
      (C(edgekit provision --cache-ram))'
    - 'Unset: the host''s C(edgekit_cache_ram_mib) variable, else edgekit''s default C(None).'
    type: int
    aliases:
    - cache_ram
  draft:
    description:
    - 'Speculative decoding: a smaller catalog model of the same vocabulary drafts tokens the model checks (NAME[:QUANT];
      refused unless their tokenizers match). (C(edgekit provision --draft))'
    - 'Unset: the host''s C(edgekit_draft) variable, else edgekit''s default C(None).'
    type: str
  spec_type:
    description:
    - 'Draft-free speculation from the text so far (copy-heavy work: code edits, summaries): ngram-simple, ngram-map-k,
      ngram-map-k4v, ngram-mod, ngram-cache. (C(edgekit provision --spec-type))'
    - 'Unset: the host''s C(edgekit_spec_type) variable, else edgekit''s default C(None).'
    type: str
    choices:
    - ngram-simple
    - ngram-map-k
    - ngram-map-k4v
    - ngram-mod
    - ngram-cache
  lora:
    description:
    - 'A LoRA adapter served with the model: a .gguf file on this machine, optionally :SCALE (default 1); refused
      unless made for the model. (C(edgekit provision --lora))'
    - 'Unset: the host''s C(edgekit_lora) variable, else edgekit''s default C(None).'
    type: str
  sleep_idle_seconds:
    description:
    - 'Unload the model after this many seconds without requests (default: never). (C(edgekit provision --sleep-idle-seconds))'
    - 'Unset: the host''s C(edgekit_sleep_idle_seconds) variable, else edgekit''s default C(None).'
    type: int
  lock_file:
    description:
    - 'edgekit.lock: the sha256 of every model, recorded on first fetch and checked on every later install (default:
      next to the inventory, else in edgekit''s state folder). (C(edgekit provision --lock-file))'
    - 'Unset: the host''s C(edgekit_lock_file) variable, else edgekit''s default C(None).'
    type: str
  rollback:
    description:
    - 'C(rollback=false) is C(edgekit provision --no-rollback): Keep a change that leaves the service unhealthy
      (for debugging) instead of restoring the last healthy state.'
    - 'Unset: the host''s C(edgekit_rollback) variable, else edgekit''s default C(True).'
    type: bool
  power_mode:
    description:
    - Jetson power mode by its name in the board's /etc/nvpmodel.conf (e.g. MAXN_SUPER, 25W), or max / efficient.
      (C(edgekit provision --power-mode))
    - 'Unset: the host''s C(edgekit_power_mode) variable, else edgekit''s default C(None).'
    type: str
  clocks:
    description:
    - 'max: pin the clocks (jetson_clocks), at every boot too (a oneshot unit before the server). (C(edgekit provision
      --clocks))'
    - 'Unset: the host''s C(edgekit_clocks) variable, else edgekit''s default C(None).'
    type: str
    choices:
    - max
  headless:
    description:
    - 'Boot to multi-user.target: the desktop''s memory goes to the model (next boot). (C(edgekit provision --headless))'
    - 'Unset: the host''s C(edgekit_headless) variable, else edgekit''s default C(False).'
    type: bool
  swap:
    description:
    - A swap file of this size (e.g. 8G) instead of zram; refused on eMMC/SD. (C(edgekit provision --swap))
    - 'Unset: the host''s C(edgekit_swap) variable, else edgekit''s default C(None).'
    type: str
  swap_path:
    description:
    - Where the swap file goes (default /swapfile; put it on NVMe). (C(edgekit provision --swap-path))
    - 'Unset: the host''s C(edgekit_swap_path) variable, else edgekit''s default C(''/swapfile'').'
    type: str
  force_swap_on_sd:
    description:
    - Allow --swap on eMMC/SD (it wears the card, and a model that swaps there crawls). (C(edgekit provision --force-swap-on-sd))
    - 'Unset: the host''s C(edgekit_force_swap_on_sd) variable, else edgekit''s default C(False).'
    type: bool
  metrics:
    description:
    - 'C(metrics=false) is C(edgekit provision --no-metrics): Do not install the board + server metrics exporter.'
    - 'Unset: the host''s C(edgekit_metrics) variable, else edgekit''s default C(True).'
    type: bool
  metrics_port:
    description:
    - Port of the metrics exporter (default 9838). (C(edgekit provision --metrics-port))
    - 'Unset: the host''s C(edgekit_metrics_port) variable, else edgekit''s default C(9838).'
    type: int
  metrics_host:
    description:
    - Address the exporter binds (default 0.0.0.0, with a token). (C(edgekit provision --metrics-host))
    - 'Unset: the host''s C(edgekit_metrics_host) variable, else edgekit''s default C(''0.0.0.0'').'
    type: str
  metrics_token:
    description:
    - 'C(metrics_token=false) is C(edgekit provision --no-metrics-token): Exporter without a token (loopback --metrics-host
      only).'
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
