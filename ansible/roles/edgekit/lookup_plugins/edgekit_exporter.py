"""lookup('edgekit_exporter'): edgekit's metrics exporter zipapp, built on the controller by
edgekit.metrics.bundle.build() (the same bytes `edgekit provision` uploads), as a file the copy module can send.

Returns [{'path': <the zipapp on the controller>, 'sha256': <its digest>}]. The file is named by its digest under
edgekit's cache directory ($EDGEKIT_HOME/cache or ~/.cache/edgekit, `exporter/`) and written through a temp file
renamed into place, so hosts built in parallel share one whole file and a second run rewrites nothing.
Needs the edgekit package, like the role's filters (filter_plugins/edgekit.py).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

_CHECKOUT = Path(__file__).resolve().parents[4]      # <checkout>/ansible/roles/edgekit/lookup_plugins/this file


def _bundle():
    """edgekit's exporter bundle: the checkout holding this role first (one version with the role), else installed."""
    if (_CHECKOUT / "edgekit" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
        sys.path.insert(0, str(_CHECKOUT))
    try:
        from edgekit.metrics import bundle
    except ImportError as e:
        raise AnsibleLookupError(
            "the edgekit role builds the metrics exporter with the edgekit Python package on the controller, "
            f"importable by ansible-playbook's Python ({sys.executable}): pip install edgekit, or set "
            f"edgekit_metrics: false ({e})") from None
    return bundle


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        bundle = _bundle()
        from edgekit import paths

        data = bundle.build()
        digest = hashlib.sha256(data).hexdigest()
        folder = paths.cache() / "exporter"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"edgekit-exporter-{digest[:16]}.pyz"
        if not (path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".edgekit-exporter-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return [{"path": str(path), "sha256": digest}]
