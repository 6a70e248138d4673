"""telecorder: record teleoperation demonstrations and turn them into VLA training data."""

__version__ = "0.1.0"
