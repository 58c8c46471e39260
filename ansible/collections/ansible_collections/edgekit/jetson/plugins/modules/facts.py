#!/usr/bin/python
# This file documents the action plugin plugins/action/facts.py; the work is done on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: facts
short_description: What edgekit finds on a Jetson (C(edgekit facts))
description:
  - Reads the device with edgekit's facts (one command each, a pure parser) through the play's connection
    (board, L4T/JetPack, CUDA, GPU architecture, memory, power mode, clocks, swap) and sets them as the
    C(edgekit) fact.
  - Changes nothing; runs in check mode too.
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
  cuda_arch:
    description:
      - The GPU architecture to assume instead of the one the device reports (C(87), C(sm_87), C(8.7)).
    type: str
"""

EXAMPLES = r"""
- name: Read what edgekit sees
  edgekit.jetson.facts:

- name: Show the board
  ansible.builtin.debug:
    msg: "{{ edgekit.jetson.model | default(edgekit.arch) }}"
"""

RETURN = r"""
ansible_facts:
  description: The facts, under C(edgekit) (C(edgekit facts --json)).
  returned: success
  type: dict
"""
