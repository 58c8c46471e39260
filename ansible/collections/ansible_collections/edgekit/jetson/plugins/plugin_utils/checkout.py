"""Which edgekit the collection runs: the checkout holding it first (the collection and its edgekit are one
version), else the edgekit package installed for ansible-playbook's Python."""

from __future__ import annotations

import sys
from pathlib import Path

from ansible.errors import AnsibleError

# <checkout>/ansible/collections/ansible_collections/edgekit/jetson/plugins/plugin_utils/checkout.py
_CHECKOUT = Path(__file__).resolve().parents[7]


def import_edgekit() -> None:
    """Put the checkout holding this collection first on sys.path when there is one; then edgekit must import."""
    if (_CHECKOUT / "edgekit" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
        sys.path.insert(0, str(_CHECKOUT))
    try:
        import edgekit  # noqa: F401
    except ImportError as e:
        raise AnsibleError("the edgekit.jetson collection needs the edgekit Python package on the controller, "
                           f"importable by ansible-playbook's Python ({sys.executable}): pip install edgekit ({e})"
                           ) from None
