"""Device-side Python runs on the device's python3: JetPack 5 boards have 3.8. Every module the helper and exporter
zipapps carry passes `vermin -t=3.8-` (vermin from PyPI, a test dependency); a module using something newer fails
here, not on a board. The e2e test test_old_python_e2e.py runs the helper under a real older interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgekit.metrics import bundle
from edgekit.remote import helper

TARGET = "3.8-"        # JetPack 5 (L4T r35): Ubuntu 20.04's python3.8


def vermin(*paths: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from vermin.main import main; sys.exit(main())",
                           f"-t={TARGET}", "--no-tips", "--violations", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def device_modules() -> list[Path]:
    """Every module of both zipapps, as files of this checkout (what the zipapps are built from)."""
    return sorted({helper.PACKAGE / rel for rel in (*helper.MODULES, *bundle.MODULES)})


def test_the_list_is_every_module_both_zipapps_carry():
    import io
    import zipfile

    carried = set()
    for blob in (helper.build(), bundle.build()):
        carried |= set(zipfile.ZipFile(io.BytesIO(blob)).namelist()) - {"__main__.py"}
    listed = {f"edgekit/{p.relative_to(helper.PACKAGE)}" for p in device_modules()}
    empty_packages = {"edgekit/__init__.py", "edgekit/models/__init__.py"}     # written empty by zipapp()
    assert carried - listed == empty_packages and listed <= carried and len(listed) >= 20


def test_every_device_module_passes_vermin_for_python_3_8():
    modules = device_modules()
    r = vermin(*modules)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Analyzing {len(modules)} files" in r.stdout and "Target versions not met" not in r.stdout


def test_vermin_refuses_what_3_8_lacks(tmp_path):
    """The check bites: a module using 3.9's graphlib and math.lcm fails it, each named."""
    newer = tmp_path / "newer.py"
    newer.write_text("import graphlib\nimport math\n\nprint(math.lcm(2, 3), graphlib)\n")
    r = vermin(*device_modules()[:3], newer)
    assert r.returncode == 1 and "Target versions not met:   3.8-" in r.stdout
    assert "'graphlib' module requires !2, 3.9" in r.stdout and "'math.lcm' member requires !2, 3.9" in r.stdout
