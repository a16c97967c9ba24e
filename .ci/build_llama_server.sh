#!/usr/bin/env bash
# Build llama-cpp-python once into a wheel cache outside the checkout, then install it (with the
# [server] extra) from that cache. Idempotent: a second run only installs (~10 s); the build (~6-8 min
# on 2 cores) happens only when the cached wheel for this version + CMAKE_ARGS is missing.
#
#   PYTHON=/path/to/venv/bin/python build_llama_server.sh        # build-if-missing + install into that venv
#   build_llama_server.sh --build-only                            # only fill the cache (e.g. a CI warm-up step)
#
# Env: PYTHON (default: python3 on PATH; use your venv's python), LLAMA_CPP_VERSION (0.3.36),
#      BLEDGER_WHEEL_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/bledger/wheels).
# The model it serves in the tests is the bundled SmolLM2 GGUF, installed by `bledger model fetch`.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VER=${LLAMA_CPP_VERSION:-0.3.36}
CACHE_ROOT=${BLEDGER_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bledger/wheels}
# CPU-only, portable x86-64-v3 (AVX2/FMA/F16C/BMI2) build -- NOT -march=native, so a cached wheel never
# SIGILLs if the cache outlives the CPU it was built on; no mtmd/llava (the text server never loads it),
# no tests/examples/tools/server binaries, no curl. 140 ninja steps instead of 193.
CMAKE_ARGS_FAST="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENCL=OFF -DGGML_RPC=OFF \
-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
-DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF"
if [ "$(uname -m)" != x86_64 ]; then  # the x86 SIMD flags mean nothing elsewhere
  CMAKE_ARGS_FAST="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF"
fi
BUILD_ARGS=${LLAMA_CMAKE_ARGS:-$CMAKE_ARGS_FAST}
KEY=$(printf '%s\n%s\n%s\n' "$VER" "$BUILD_ARGS" "$(uname -m)" | sha256sum | cut -c1-12)
DIR="$CACHE_ROOT/llama-cpp-python-$VER-$KEY"
mkdir -p "$CACHE_ROOT"

have_wheel() { compgen -G "$DIR/llama_cpp_python-$VER-*.whl" > /dev/null; }

if ! have_wheel; then
  # one builder at a time (two CI jobs / a dev shell racing): the loser waits, then finds the wheel
  exec 9> "$CACHE_ROOT/.llama-build.lock"
  flock 9
  if ! have_wheel; then
    echo "[llama] no cached wheel in $DIR: building llama-cpp-python==$VER from source (several minutes)" >&2
    tmp=$(mktemp -d "$CACHE_ROOT/.build-XXXXXX")
    start=$(date +%s)
    # --no-binary: PyPI has no Linux wheel anyway; this makes it explicit. --no-deps: only this package.
    # CMAKE_BUILD_PARALLEL_LEVEL: scikit-build-core's ninja would otherwise run nproc+2 jobs (4 on 2 cores).
    if ! CMAKE_ARGS="$BUILD_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
         "$PYTHON" -m pip wheel --no-deps --no-binary llama-cpp-python --no-cache-dir -w "$tmp" \
         "llama-cpp-python==$VER" > "$tmp.log" 2>&1; then
      tail -40 "$tmp.log" >&2; rm -rf "$tmp"; echo "[llama] build failed; full log: $tmp.log" >&2; exit 1
    fi
    "$PYTHON" -m zipfile -t "$tmp"/llama_cpp_python-*.whl > /dev/null
    printf 'version=%s\narch=%s\nbuilt=%s\nseconds=%s\ncmake_args=%s\n' "$VER" "$(uname -m)" \
      "$(date -u +%FT%TZ)" "$(( $(date +%s) - start ))" "$BUILD_ARGS" > "$tmp/BUILD-INFO"
    chmod 755 "$tmp"; rm -rf "$DIR"; mv "$tmp" "$DIR"; rm -f "$tmp.log"   # atomic publish: a half-built dir is never seen
    echo "[llama] built in $(( $(date +%s) - start )) s -> $DIR" >&2
  fi
  flock -u 9
fi

[ "${1:-}" = "--build-only" ] && { ls "$DIR"/*.whl; exit 0; }

# --only-binary: never fall back to a silent source build if the cache were somehow bypassed
"$PYTHON" -m pip install --only-binary llama-cpp-python --find-links "$DIR" "llama-cpp-python[server]==$VER" >&2
"$PYTHON" - <<'PY'
import llama_cpp, llama_cpp.server.app  # noqa: F401  (loads libllama/libggml; fails loudly if the wheel is broken)
print("llama_cpp", llama_cpp.__version__, "|", llama_cpp.llama_print_system_info().decode().strip())
PY
