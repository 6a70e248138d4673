"""Cameras: :mod:`.opencv` (USB/V4L2 devices, video files, network streams through OpenCV) and :mod:`.sim` (the sim's rendered cameras)."""
