#!/usr/bin/env bash
# Set up a fresh machine for telecorder: Debian packages for offscreen MuJoCo rendering,
# a virtual environment in .venv, the CPU build of PyTorch, and the project with its extras.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${TELECORDER_EXTRAS:-sim,dynamixel,rlds,torch,viewer,vr,beam,dev}"
PYTHON="${PYTHON:-python3}"

# MuJoCo renders cameras offscreen through EGL; Mesa provides a software EGL when there is no GPU.
# The live-view tests run the recorder's window on a real X server (Xvfb), press keys with xdotool
# and take a screenshot with xwd.
missing=()
for pkg in libegl1 libgl1-mesa-dri libegl-mesa0 xvfb xdotool x11-apps; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    # Not fatal: the Python side still installs, and what needs a missing package says so (sim
    # cameras fail to render without EGL; the live-view tests skip without Xvfb).
    { $sudo apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
      || echo "setup: warning: apt-get could not install ${missing[*]}; sim cameras need EGL (Mesa) to render, live-view tests need Xvfb" >&2
  else
    echo "setup: warning: cannot install ${missing[*]} (no apt-get); sim cameras need EGL (Mesa) to render, live-view tests need Xvfb" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# Install the CPU wheel of torch first: resolving plain 'torch' later would pull a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch==2.13.0 (CPU)"
  "${pip[@]}" "torch==2.13.0"
fi
echo "setup: installing telecorder[$EXTRAS]"
"${pip[@]}" -e ".[$EXTRAS]"

# robomimic 0.3.0, for the tests that run its SequenceDataset and get_dataset_info.py on our output.
# --no-deps: it declares torchvision, which would bring a CUDA torch over the CPU one above; the parts
# the tests use need only torch, h5py, numpy and the small packages in the dev extra (six, termcolor, ...).
if [[ ",$EXTRAS," == *",dev,"* ]] && ! .venv/bin/python -c "import robomimic" >/dev/null 2>&1; then
  echo "setup: installing robomimic==0.3.0 (--no-deps)"
  "${pip[@]}" --no-deps "robomimic==0.3.0"
fi
