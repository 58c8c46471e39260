#!/usr/bin/python
# This file documents the action plugin plugins/action/rollback.py; the work is done on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: rollback
short_description: Switch a Jetson back to its previous llama.cpp build and server settings (C(edgekit rollback))
description:
  - Runs edgekit's rollback steps through the play's connection, under the device's edgekit lock - the previous
    build made current, the previous env file (and router presets) back, a restart - then checks the service
    answers and records that as the last healthy state.
  - Fails, changing nothing, when there is nothing to roll back to.
  - Check mode is C(edgekit rollback --dry-run), printing the commands each step would run.
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
options: {}
"""

EXAMPLES = r"""
- name: Back to the build and settings before the last change
  edgekit.jetson.rollback:
"""

RETURN = r"""
steps:
  description: Every step's result, as C(edgekit rollback --json) reports them.
  returned: always
  type: list
  elements: dict
"""
