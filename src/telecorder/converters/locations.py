"""Where a conversion may read and write: paths every worker can open as files.

The rule holds for every runner (the local pool and Beam alike), so it sits with the converters,
below the runners that execute them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .base import ConversionError


def check_path(path: str | Path, what: str) -> Path:
    """A path every worker can open as a file: local, or a bucket mounted at the same path on
    the driver and every worker. URL schemes fail here, before any worker starts."""
    text = os.fspath(path)
    # pathlib folds "gs://b" into "gs:/b"; one letter before the colon is a Windows drive.
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/", text)
    if scheme:
        raise ConversionError(
            f"{what} {scheme.group(1)}://{text[len(scheme.group(0)):].lstrip('/')}: {scheme.group(1)}:// paths cannot be used directly; telecorder's readers and writers "
            "need files they can open, seek and rename (HDF5 episodes, Parquet and MP4 parts, the final rename). "
            "Mount the bucket at the same path on the driver and every worker (gcsfuse, mountpoint-s3, s3fs, "
            "an NFS or Filestore share) and pass that path"
        )
    return Path(text)
