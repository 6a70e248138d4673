"""Episode viewer: browse a dataset's cameras, plots and timing, or save the view as images.

pygame is imported only when something is drawn, so importing this package is cheap
and works without the ``viewer`` extra installed.
"""

from __future__ import annotations

from .browser import EpisodeBrowser, screenshot
from .layout import CameraView, Layout, ViewState, compute_layout, render_view

__all__ = ["CameraView", "EpisodeBrowser", "Layout", "ViewState", "compute_layout", "render_view", "screenshot"]
