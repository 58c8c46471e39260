"""Old names of the download code, which now lives in edgekit.device (files: disk and sidecars; fetch: HTTP) and
runs on the device as the helper's `fetch` (edgekit.remote.helper). Kept for models/download.py until it imports
edgekit.device."""

from edgekit.device.fetch import fetch  # noqa: F401
from edgekit.device.files import (CHUNK, MARGIN, FetchError, WriteFailed, adopt, check, check_space,  # noqa: F401
                                  free_space, hash_file, human, sidecar_path, stream, verified_sha256, write_failed,
                                  write_sidecar)
