"""Import behaviour of telecorder.sim that must hold with or without MuJoCo installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_package_import_does_not_load_mujoco() -> None:
    proc = _run_python(
        """
        import sys
        import telecorder.sim
        assert "mujoco" not in sys.modules, "importing telecorder.sim must stay light"
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_missing_mujoco_gives_install_hint() -> None:
    proc = _run_python(
        """
        import sys
        sys.modules["mujoco"] = None  # makes `import mujoco` raise ImportError
        import telecorder.sim
        try:
            telecorder.sim.SimEnv
        except ImportError as exc:
            assert "telecorder[sim]" in str(exc), exc
        else:
            raise SystemExit("expected ImportError")
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_gl_backend_defaults_to_egl_when_headless() -> None:
    proc = _run_python(
        """
        import os, sys
        for var in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
            os.environ.pop(var, None)
        from telecorder.sim import ensure_gl_backend
        ensure_gl_backend()
        if sys.platform.startswith("linux"):
            assert os.environ["MUJOCO_GL"] == "egl"
            assert os.environ["PYOPENGL_PLATFORM"] == "egl"
        os.environ["MUJOCO_GL"] = "osmesa"
        os.environ.pop("PYOPENGL_PLATFORM")
        ensure_gl_backend()
        assert os.environ["MUJOCO_GL"] == "osmesa"  # an explicit choice is kept
        assert "PYOPENGL_PLATFORM" not in os.environ
        """
    )
    assert proc.returncode == 0, proc.stderr
