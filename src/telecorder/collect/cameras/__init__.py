"""Cameras: OpenCV devices and the sim's rendered cameras."""
