"""Errors that reach the user as one readable line instead of a traceback.

Every error raised on bad input (a corrupt file, a wrong schema, an unplugged camera)
derives from :class:`TelecorderError`; the CLI prints its message and exits non-zero.
"""

from __future__ import annotations


class TelecorderError(Exception):
    """An error whose message is written for the user: what failed, where, and what to do."""


class DatasetError(TelecorderError):
    """A dataset folder or episode file is missing, corrupt, or of the wrong schema."""


class SchemaMismatchError(DatasetError):
    """Appending to a dataset whose features, fps or robot differ from the new recording."""


class DeviceError(TelecorderError):
    """A robot, teleoperation device or camera failed or stopped responding."""


class CameraError(DeviceError):
    """A camera could not be opened or stopped delivering frames."""


def missing_extra(package: str, extra: str) -> ImportError:
    """The ImportError to raise when an optional heavy dependency is absent."""
    return ImportError(
        f"{package} is not installed; install it with: pip install 'telecorder[{extra}]'"
    )
