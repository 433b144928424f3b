#!/usr/bin/env bash
# Build llama.cpp once from the source the pinned llama-cpp-python sdist vendors, and use that one
# build twice: its shared libraries become the Python binding's (in-process parity checks), and
# its `llama-server` / `llama-mtmd-cli` are the binaries medzoo runs and prints for users. One
# compile instead of two keeps a fresh set-up inside CI's budget, and what parity measures is the
# very llama.cpp that serves.
#
#   tools/build_llama_cpp.sh VENV VERSION
#
# Writes VENV/llama.cpp/{src,build} and links llama-server / llama-mtmd-cli into VENV/bin. The
# binding itself is installed without its own compile (CMAKE_ARGS=-DLLAMA_BUILD=OFF, see
# tools/bootstrap.sh). The source gets tools/llama_cpp_patches/*.patch first (each says why). A
# no-op when the build for this VERSION and these patches is complete.
set -euo pipefail
VENV=$1
VERSION=$2
ROOT="$VENV/llama.cpp"
PATCHES=("$(cd "$(dirname "$0")" && pwd)"/llama_cpp_patches/*.patch)
STAMP="$ROOT/.built-$VERSION-$(cat "${PATCHES[@]}" | sha256sum | cut -c1-12)"
TARGETS=(llama-server llama-mtmd-cli)
PY="$VENV/bin/python"
LIBDIR=$("$PY" -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('llama_cpp').origin).parent / 'lib')")

# A CUDA host (a GPU, nvidia-smi, and the CUDA compiler, nvcc; or MEDZOO_LLAMA_CUDA=1) gets
# llama.cpp's CUDA backend: llama-server then offloads layers to the GPU (-ngl). nvcc alone is not
# enough: CMake compiles for the GPU it detects ("native"), and some CPU images ship nvcc.
cuda_host() { command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0; }
GPU_ARGS=()
if [ "${MEDZOO_LLAMA_CUDA:-$(cuda_host)}" = 1 ]; then
  GPU_ARGS=(-DGGML_CUDA=ON)
  STAMP="$STAMP-cuda"
fi

if [ ! -f "$STAMP" ]; then
  echo "medzoo: building llama.cpp (llama-cpp-python==$VERSION's source: libraries, ${TARGETS[*]}; ~10 min on 2 cores)"
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # only this package as an sdist (`--no-binary :all:` would build every build dependency too)
  "$PY" -m pip download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$tmp"
  tar -xzf "$tmp"/llama_cpp_python-"$VERSION".tar.gz -C "$tmp"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$ROOT/src"
  for p in "${PATCHES[@]}"; do patch -d "$ROOT/src" -p1 --forward --quiet <"$p"; done
  # Shared libraries with $ORIGIN run paths: the binaries and the binding's copies each find their
  # neighbours. No curl/OpenSSL (nothing is downloaded at run time), no web UI assets (they would
  # be fetched from a hub), Release as llama-cpp-python builds it.
  cmake -S "$ROOT/src" -B "$ROOT/build" -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN' \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF "${GPU_ARGS[@]}" >"$ROOT/configure.log" 2>&1 ||
    { tail -20 "$ROOT/configure.log"; exit 1; }
  cmake --build "$ROOT/build" --target llama mtmd "${TARGETS[@]}" -j "$(nproc)" >"$ROOT/build.log" 2>&1 ||
    { tail -30 "$ROOT/build.log"; exit 1; }
  touch "$STAMP"
fi

# The binding loads libllama / libmtmd (and through their run paths libggml*) from its lib folder.
mkdir -p "$LIBDIR"
cp -af "$ROOT"/build/bin/*.so* "$LIBDIR"/  # -a: the .so links stay links
for t in "${TARGETS[@]}"; do
  ln -sf "$(cd "$ROOT/build/bin" && pwd)/$t" "$VENV/bin/$t"
done
