"""The exporter as one zipapp (bytes): the same bytes for the same code, installed root-owned on the device.

Its own zipapp, not the device helper: the helper lives in the login user's home (0700, and ProtectHome hides
it from units), while the exporter's unit runs as the service user from /opt/edgekit/exporter. It carries the
exporter, the telemetry collector's modules (its sources) and edgekit.layout (the device paths), nothing else.
"""

from __future__ import annotations

import functools
import hashlib

from edgekit.remote.helper import AGENT_MODULES, zipapp

EXPORTER_MODULES = ("exporter/__init__", "exporter/__main__", "exporter/textformat", "exporter/board",
                    "exporter/llama", "exporter/facts", "exporter/app")
MODULES = (*(f"{m}.py" for m in EXPORTER_MODULES), *(f"{m}.py" for m in AGENT_MODULES), "layout.py",
           "localhttp.py")
MAIN = ("import sys\n"
        "if sys.version_info < (3, 8):\n"
        "    sys.exit('the edgekit exporter needs python3 >= 3.8 on the device')\n"
        "from edgekit.exporter.app import main\n"
        "sys.exit(main())\n")


@functools.lru_cache(maxsize=1)
def build() -> bytes:
    """The exporter zipapp: `python3 edgekit-exporter.pyz --help` on the device."""
    return zipapp(MAIN, MODULES)


def sha256() -> str:
    return hashlib.sha256(build()).hexdigest()
