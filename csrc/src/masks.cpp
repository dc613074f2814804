#include "pyprune/masks.hpp"

#include <atomic>
#include <cmath>
#include <limits>

#include "pyprune/parallel.hpp"

namespace pyprune {

namespace {

// Masks work on the bit patterns: zero is all-zero bits in every float format.
template <class S>
void apply_mask_impl(const S* w, const std::uint8_t* keep, S* out, std::size_t n, int threads) {
  using Bits = typename elem<S>::bits;
  const Bits* src = reinterpret_cast<const Bits*>(w);
  Bits* dst = reinterpret_cast<Bits*>(out);
  parallel_for(n, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) dst[i] = src[i] & static_cast<Bits>(-static_cast<Bits>(keep[i] != 0));
  });
}

template <class S>
constexpr typename elem<S>::bits abs_mask() {
  using Bits = typename elem<S>::bits;
  return static_cast<Bits>(static_cast<Bits>(~Bits(0)) >> 1);  // no int promotion for uint16
}

template <class S>
double value_of_bits(typename elem<S>::bits b) {
  if constexpr (std::is_same_v<S, half>) return half_to_float(b);
  else if constexpr (std::is_same_v<S, float>) return bit_cast<float>(b);
  else return bit_cast<double>(b);
}

// Smallest magnitude bit pattern whose value is >= t (> t when inclusive): |x| is zeroed exactly
// when its magnitude bits are below it. Magnitude bits are ordered like the values (NaN above Inf).
template <class S>
typename elem<S>::bits magnitude_cutoff(double t, bool inclusive) {
  using Bits = typename elem<S>::bits;
  const Bits inf_bits = std::is_same_v<S, half> ? Bits(0x7C00u)
                        : std::is_same_v<S, float> ? Bits(0x7F800000u)
                                                   : static_cast<Bits>(0x7FF0000000000000ull);
  Bits lo = 0, hi = static_cast<Bits>(inf_bits + 1);  // answer in [lo, hi]
  while (lo < hi) {
    const Bits mid = static_cast<Bits>(lo + (hi - lo) / 2);
    const double v = value_of_bits<S>(mid);
    if (inclusive ? v > t : v >= t)
      hi = mid;
    else
      lo = static_cast<Bits>(mid + 1);
  }
  return lo;
}

template <class S>
void apply_threshold_impl(const S* w, double t, bool inclusive, S* out, std::size_t n, int threads) {
  using Bits = typename elem<S>::bits;
  const Bits cutoff = magnitude_cutoff<S>(t, inclusive);
  const Bits* src = reinterpret_cast<const Bits*>(w);
  Bits* dst = reinterpret_cast<Bits*>(out);
  constexpr Bits mag = abs_mask<S>();
  parallel_for(n, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      const Bits x = src[i];
      dst[i] = (x & mag) < cutoff ? Bits{0} : x;
    }
  });
}

template <class S>
std::size_t count_nonzero_impl(const S* w, std::size_t n, int threads) {
  using Bits = typename elem<S>::bits;
  const Bits* src = reinterpret_cast<const Bits*>(w);
  constexpr Bits mag = abs_mask<S>();
  std::atomic<std::size_t> total{0};
  parallel_for(n, threads, [&](std::size_t b, std::size_t e) {
    std::size_t c = 0;
    for (std::size_t i = b; i < e; ++i) c += (src[i] & mag) != 0;
    total += c;
  });
  return total;
}

}  // namespace

void apply_mask(const Tensor& w, const std::uint8_t* keep, void* out, int threads) {
  dispatch(w.dtype, [&](auto tag) {
    using S = decltype(tag);
    apply_mask_impl(w.as<S>(), keep, static_cast<S*>(out), w.size(), threads);
  });
}

void apply_threshold(const Tensor& w, double threshold, bool inclusive, void* out, int threads) {
  if (std::isnan(threshold)) throw std::invalid_argument("threshold is NaN");
  dispatch(w.dtype, [&](auto tag) {
    using S = decltype(tag);
    apply_threshold_impl(w.as<S>(), threshold, inclusive, static_cast<S*>(out), w.size(), threads);
  });
}

std::size_t count_nonzero(const Tensor& w, int threads) {
  return dispatch(w.dtype, [&](auto tag) {
    using S = decltype(tag);
    return count_nonzero_impl(w.as<S>(), w.size(), threads);
  });
}

std::vector<std::int64_t> keep_indices(const std::uint8_t* mask, std::size_t n) {
  std::vector<std::int64_t> idx;
  for (std::size_t i = 0; i < n; ++i)
    if (mask[i]) idx.push_back(static_cast<std::int64_t>(i));
  return idx;
}

}  // namespace pyprune
