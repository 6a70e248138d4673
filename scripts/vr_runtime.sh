#!/usr/bin/env bash
# Build a minimal Monado OpenXR runtime from ../shared/vendor (or $TELECORDER_VENDOR) for the live VR tests
# and for trying `collect --device vr` without a headset, then print the XR_RUNTIME_JSON to use.
#
#   scripts/vr_runtime.sh            install missing Debian build deps, build once, print XR_RUNTIME_JSON=...
#   scripts/vr_runtime.sh --print    print the manifest path of a finished build (exit 1 if there is none)
#
# Next to it, openxr_monado-noheadless.json names the same runtime built without XR_MND_headless (an
# incremental rebuild, ~20 s): the tests check the client's error on a runtime that lacks the extension.
#
# The build is in-process (no service/IPC), with the null compositor (CPU Vulkan through Mesa's lavapipe)
# and only the `simulated` and `remote` drivers. It lives in a cache folder keyed by the archive's sha256
# (${XDG_CACHE_HOME:-~/.cache}/telecorder/monado-<sha12>/) and is only rebuilt when the archive changes or
# a previous build did not finish (we build into a temporary folder and rename it into place at the end).
# Without the vendor archive, or where its Debian build dependencies cannot be installed, it says why and
# exits 0 (--print exits 3 for the latter): the live VR tests then skip with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."

vendor="${TELECORDER_VENDOR:-../shared/vendor}"
archive="$vendor/monado-5980804.tar.gz"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/telecorder"

if [ ! -f "$archive" ]; then
  echo "vr-runtime: $archive not found; skipping the Monado build (live VR tests will skip)" >&2
  [ "${1:-}" = "--print" ] && exit 1
  exit 0
fi

sha12="$(sha256sum "$archive" | cut -c1-12)"
dest="$cache_root/monado-$sha12"
manifest="$dest/openxr_monado-dev.json"

# A finished build has both manifests and the libraries they name; anything less is rebuilt.
complete() {
  [ -f "$manifest" ] && [ -f "$dest/libopenxr_monado.so" ] \
    && [ -f "$dest/openxr_monado-noheadless.json" ] && [ -f "$dest/libopenxr_monado_noheadless.so" ]
}

if [ "${1:-}" = "--print" ]; then
  if ! complete; then
    unavailable="$cache_root/monado-$sha12.unavailable"
    [ -f "$unavailable" ] && { echo "vr-runtime: cannot build here: $(cat "$unavailable")" >&2; exit 3; }
    echo "vr-runtime: no finished build in $dest (run make vr-runtime)" >&2
    exit 1
  fi
  echo "$manifest"
  exit 0
fi

if complete; then
  echo "vr-runtime: cached build $dest" >&2
  echo "XR_RUNTIME_JSON=$manifest"
  exit 0
fi

# Debian packages the minimal build needs: compilers, cmake/ninja, glslang for the compositor's shaders,
# Vulkan headers/loader and Mesa's CPU Vulkan driver for the null compositor, Eigen and udev (required by
# Monado's CMake on Linux).
missing=()
for pkg in build-essential cmake ninja-build pkg-config python3 glslang-tools libvulkan-dev \
           mesa-vulkan-drivers libeigen3-dev libudev-dev libx11-xcb-dev libxcb-randr0-dev \
           libxrandr-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# A machine that cannot install them (no apt-get, no root, no package mirror) cannot build the runtime:
# that is said in $unavailable, and the live VR tests skip with that reason instead of failing. A build
# that starts and fails is an error.
unavailable="$cache_root/monado-$sha12.unavailable"
cannot_build() {
  mkdir -p "$cache_root"
  echo "$1" >"$unavailable"
  echo "vr-runtime: warning: $1; the live VR tests will skip" >&2
  exit 0
}
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || cannot_build "Debian packages ${missing[*]} are missing and there is no apt-get"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || cannot_build "Debian packages ${missing[*]} are missing and neither root nor sudo is available"
    sudo="sudo"
  fi
  echo "vr-runtime: installing Debian packages: ${missing[*]}" >&2
  { $sudo apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
    || cannot_build "apt-get could not install ${missing[*]}"
fi
rm -f "$unavailable"

mkdir -p "$cache_root"
# One build at a time per archive (two test runs may start together); the later one reuses it.
exec 9>"$cache_root/.monado-$sha12.lock"
flock 9
if complete; then
  echo "vr-runtime: cached build $dest" >&2
  echo "XR_RUNTIME_JSON=$manifest"
  exit 0
fi
work="$(mktemp -d "$cache_root/.monado-$sha12.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "vr-runtime: building Monado ($archive, sha256 $sha12...) in $work" >&2
start=$SECONDS
tar -xzf "$archive" -C "$work"
src="$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)"

# Every hardware driver off except the two we use; no service, IPC, tools or samples. aux_vive stays:
# the remote driver reports its controllers with the Index bindings defined there.
off=(ARDUINO DAYDREAM DEPTHAI EUROC HANDTRACKING HDK HYDRA ILLIXR NS OHMD OPENGLOVES PSMV PSSENSE PSVR QWERTY
     REALSENSE RIFT_S ROKID SIMULAVR STEAMVR_LIGHTHOUSE SURVIVE TWRAP ULV2 ULV5 VF VIVE WMR XREAL_AIR)
flags=()
for d in "${off[@]}"; do flags+=("-DXRT_BUILD_DRIVER_$d=OFF"); done
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_TESTING=OFF -DXRT_BUILD_SAMPLES=OFF -DBUILD_DOC=OFF \
  -DXRT_FEATURE_SERVICE=OFF -DXRT_MODULE_IPC=OFF -DXRT_MODULE_MONADO_CLI=OFF -DXRT_MODULE_MONADO_GUI=OFF \
  -DXRT_FEATURE_STEAMVR_PLUGIN=OFF -DXRT_FEATURE_DEBUG_GUI=OFF \
  -DXRT_FEATURE_WINDOW_PEEK=OFF -DXRT_HAVE_SDL2=OFF -DXRT_HAVE_OPENCV=OFF -DXRT_HAVE_GST=OFF \
  -DXRT_MODULE_COMPOSITOR_MAIN=ON -DXRT_MODULE_COMPOSITOR_NULL=ON \
  -DXRT_BUILD_DRIVER_SIMULATED=ON -DXRT_BUILD_DRIVER_REMOTE=ON "${flags[@]}" >"$work/configure.log" 2>&1 \
  || { tail -n 40 "$work/configure.log" >&2; echo "vr-runtime: cmake configure failed" >&2; exit 1; }
ninja -C "$work/build" openxr_monado >"$work/build.log" 2>&1 \
  || { tail -n 40 "$work/build.log" >&2; echo "vr-runtime: build failed" >&2; exit 1; }

# Keep only what a client loads: the runtime library and a manifest next to it that names it by absolute path.
lib="$work/build/src/xrt/targets/openxr/libopenxr_monado.so"
[ -f "$lib" ] || { echo "vr-runtime: build produced no $lib" >&2; exit 1; }
out="$work/out"
mkdir -p "$out"
manifest_for() {  # library file name, runtime name
  printf '{\n    "file_format_version": "1.0.0",\n    "runtime": {\n        "name": "%s",\n        "library_path": "%s"\n    }\n}\n' \
    "$2" "$dest/$1"
}
cp "$lib" "$out/libopenxr_monado.so"
manifest_for libopenxr_monado.so Monado >"$out/openxr_monado-dev.json"

# The same runtime without XR_MND_headless (incremental: only the state tracker rebuilds).
cmake "$work/build" -DXRT_FEATURE_OPENXR_HEADLESS=OFF >>"$work/configure.log" 2>&1 \
  && ninja -C "$work/build" openxr_monado >>"$work/build.log" 2>&1 \
  || { tail -n 40 "$work/build.log" >&2; echo "vr-runtime: build without XR_MND_headless failed" >&2; exit 1; }
cp "$lib" "$out/libopenxr_monado_noheadless.so"
manifest_for libopenxr_monado_noheadless.so "Monado without XR_MND_headless" >"$out/openxr_monado-noheadless.json"
printf 'archive=%s\nsha256=%s\nbuild_seconds=%s\n' "$archive" "$(sha256sum "$archive" | cut -d' ' -f1)" \
  "$((SECONDS - start))" >"$out/BUILD_INFO"
rm -rf "$dest"
mv "$out" "$dest"
echo "vr-runtime: built in $((SECONDS - start)) s -> $dest" >&2
echo "XR_RUNTIME_JSON=$manifest"
