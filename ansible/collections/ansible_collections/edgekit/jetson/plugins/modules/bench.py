#!/usr/bin/python
# This file documents the action plugin plugins/action/bench.py; the work is done on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: bench
short_description: Benchmark a Jetson's llama-server (C(edgekit bench))
description:
  - Runs edgekit's fixed workload against the llama-server edgekit provisioned on the host (where the controller's
    edgekit state says it serves, with its API key), through the play's connection for the device side
    (telemetry, llama-bench, core pinning).
  - With O(sweep), once per value of a setting (power modes, ctx, parallel, cache type) under the device's edgekit
    lock, the original restored afterwards.
  - Check mode is C(edgekit bench --dry-run), the commands that would run on the device. Never reports a change -
    the device ends as it was.
version_added: 1.0.0
author:
  - edgekit
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  action:
    support: full
options:
  sweep:
    description:
      - C(power-mode[=NAME,...]), C(ctx=N,N), C(parallel=N,N) or C(cache-type=T,T) (C(edgekit bench --sweep)).
    type: str
  full:
    description:
      - With O(sweep), the full workload per value (default the quick one).
    type: bool
    default: false
  quick:
    description:
      - A short smoke run (not for comparisons).
    type: bool
    default: false
  llama_bench:
    description:
      - Also run llama-bench on the device with the same settings.
    type: bool
    default: false
  server_cpus:
    description:
      - Pin llama-server (restarted) and llama-bench to these device CPUs for the run, e.g. C(0,1); restored after.
    type: str
  port:
    description:
      - The server's port when the controller has no record of where it serves.
    type: int
    default: 8080
  out:
    description:
      - Folder on the controller for the JSON result and plots.
    type: path
    default: bench-results
  telemetry:
    description:
      - Sample the device during the run.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Tokens per second under each power mode of the board
  edgekit.jetson.bench:
    sweep: power-mode
"""

RETURN = r"""
summary:
  description: The run's summary (C(edgekit bench --json)).
  returned: success, not in check mode
  type: dict
commands:
  description: In check mode, the commands the run would run on the device, in order.
  returned: check mode
  type: list
  elements: str
"""
