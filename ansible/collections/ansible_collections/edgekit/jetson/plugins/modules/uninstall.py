#!/usr/bin/python
# This file documents the action plugin plugins/action/uninstall.py; the work is done on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: uninstall
short_description: Remove what edgekit installed on a Jetson (C(edgekit uninstall))
description:
  - Runs edgekit's uninstall steps through the play's connection, under the device's edgekit lock - the units,
    the Jetson tuning edgekit changed (restored), the service user, edgekit's folders - and forgets the device in
    the controller's edgekit state.
  - Check mode is C(edgekit uninstall --dry-run), printing the commands each step would run. A second run
    reports no change.
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
  purge_models:
    description:
      - Also delete the downloaded models (C(edgekit uninstall --purge-models)).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Remove the service, its user, settings and builds; keep the models
  edgekit.jetson.uninstall:
"""

RETURN = r"""
steps:
  description: Every step's result, as C(edgekit uninstall --json) reports them.
  returned: always
  type: list
  elements: dict
"""
