"""The exporter as one zipapp (bytes): the same bytes for the same code, installed root-owned on the device.

Its own zipapp, not the device helper: the helper lives in the login user's home (0700, and ProtectHome hides
it from units), while the exporter's unit runs as the service user from /opt/edgekit/exporter. It carries the
exporter, the telemetry collector's modules (its sources) and edgekit.layout (the device paths), nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from pathlib import Path

from edgekit.telemetry.collector import AGENT_MODULES

PACKAGE = Path(__file__).resolve().parents[1]        # edgekit/
EXPORTER_MODULES = ("exporter/__init__", "exporter/__main__", "exporter/textformat", "exporter/board",
                    "exporter/llama", "exporter/facts", "exporter/app")
MODULES = (*(f"{m}.py" for m in EXPORTER_MODULES), *(f"{m}.py" for m in AGENT_MODULES), "layout.py")
MAIN = ("import sys\n"
        "if sys.version_info < (3, 8):\n"
        "    sys.exit('the edgekit exporter needs python3 >= 3.8 on the device')\n"
        "from edgekit.exporter.app import main\n"
        "sys.exit(main())\n")


@functools.lru_cache(maxsize=1)
def build() -> bytes:
    """The exporter zipapp: `python3 edgekit-exporter.pyz --help` on the device."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(name: str, text: str) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)

        add("__main__.py", MAIN)
        add("edgekit/__init__.py", "")
        for rel in MODULES:
            add(f"edgekit/{rel}", (PACKAGE / rel).read_text(encoding="utf-8"))
    return buf.getvalue()


def sha256() -> str:
    return hashlib.sha256(build()).hexdigest()
