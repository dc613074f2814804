#include "pyprune/simd.hpp"

#include <atomic>

namespace pyprune::simd {

namespace {

// The same condition under which select.cpp compiles its AVX2 variants.
bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
#else
  return false;
#endif
}

std::atomic<bool> g_avx2_allowed{true};

}  // namespace

bool avx2_enabled() { return cpu_has_avx2() && g_avx2_allowed.load(std::memory_order_relaxed); }

void set_avx2_enabled(bool enabled) { g_avx2_allowed.store(enabled, std::memory_order_relaxed); }

}  // namespace pyprune::simd
