#!/usr/bin/env bash
# Configures, builds (Release) and runs the native kernel tests with CTest; exits non-zero on any
# failure. Each test executable runs its SIMD cases twice, with AVX2 (when the CPU has it) and with
# the SSE2 baseline, through pyprune::simd::set_avx2_enabled.
#
#   csrc/tests/run.sh [build-dir]      default: build/native-tests in this checkout
#
# Needs CMake >= 3.18 and a C++17 compiler; uses Ninja when installed. No Python, no network.
# A single executable can be run directly with a name filter, e.g. `build/native-tests/test_select tie`.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build/native-tests}"
jobs="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"
start=$SECONDS

# The generator is fixed at the first configure of a build folder; only choose it then.
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
  generator=(-G Ninja)
fi

cmake -S "$root" -B "$build" ${generator[@]+"${generator[@]}"} -DCMAKE_BUILD_TYPE=Release -DPYPRUNE_BUILD_TESTS=ON
cmake --build "$build" --parallel "$jobs"
# `cd` rather than --test-dir, which needs CMake 3.20.
(cd "$build" && ctest --output-on-failure --parallel "$jobs" --timeout 300)

echo "native tests passed in $((SECONDS - start)) s"
