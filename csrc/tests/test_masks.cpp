// Mask kernels against a scalar reference on bit patterns: apply_mask, apply_threshold, count_nonzero
// and keep_indices. Their loops are plain C++ that the compiler vectorises (no hand-written variants,
// so nothing to switch); awkward sizes, misalignments and 1-3 threads still cover every split.
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "pyprune/masks.hpp"
#include "support.hpp"

using namespace support;

namespace {

// Three threads split at odd offsets only past 3 * 32768 elements.
std::vector<std::size_t> mask_sizes() {
  std::vector<std::size_t> sizes = kSizes;
  sizes.push_back(3 * 32768 + 5);
  return sizes;
}

std::vector<std::uint8_t> random_keep(std::size_t n, std::uint64_t seed) {
  // Any non-zero byte keeps, not only 1.
  static const std::uint8_t bytes[] = {0, 1, 2, 255, 0, 1};
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> keep(n);
  for (auto& k : keep) k = bytes[rng() % 6];
  return keep;
}

}  // namespace

TEST(apply_mask_matches_reference) {
  for (DType dtype : kDTypes)
    for (std::size_t n : mask_sizes())
      for (std::size_t misalign : {0, 1, 3}) {
        CONTEXT(pyprune::dtype_name(dtype), " n=", n, " misalign=", misalign);
        const Array w = make(dtype, {static_cast<std::int64_t>(n)}, Dist::specials, n + misalign, misalign);
        const auto keep = random_keep(n, n);
        std::vector<std::uint64_t> want = w.all_bits();
        for (std::size_t i = 0; i < n; ++i)
          if (!keep[i]) want[i] = 0;
        for (int threads : kThreads) {
          CONTEXT("threads=", threads);
          Array out(dtype, {static_cast<std::int64_t>(n)}, (misalign + 1) % 4);
          fill(out, Dist::normal, 5);
          pyprune::apply_mask(w.view(), keep.data(), out.data(), threads);
          CHECK_SEQ_EQ(out.all_bits(), want);
          Array in_place = w;  // out may be w's own buffer
          pyprune::apply_mask(in_place.view(), keep.data(), in_place.data(), threads);
          CHECK_SEQ_EQ(in_place.all_bits(), want);
        }
      }
}

TEST(apply_threshold_matches_reference) {
  // Thresholds on tie values, at zero (both signs), between float16 steps, subnormal, at and past the
  // largest finite values, infinite and negative.
  const std::vector<double> thresholds = {0.0,  -0.0,   0.5,    1.0,   1.0000001, 2.0,    1e-40, 6e-8,
                                          65504, 65520, 3.4e38, 1e300, kInf,      -1.0,   -kInf};
  for (DType dtype : kDTypes)
    for (std::size_t n : mask_sizes())
      for (Dist dist : {Dist::ties, Dist::specials}) {
        const std::size_t misalign = n % 4;
        CONTEXT(pyprune::dtype_name(dtype), " n=", n, " misalign=", misalign, " ", dist_name(dist));
        Array w = make(dtype, {static_cast<std::int64_t>(n)}, dist, n * 3 + 1, misalign);
        // A few extreme magnitudes of the type so the large thresholds have something to cut.
        if (n > 8) {
          w.set(1, dtype == DType::f16 ? 65504.0 : dtype == DType::f32 ? 3.4e38 : 1e300);
          w.set(2, -1e-40);
          w.set(3, 6e-8);
        }
        for (double t : thresholds)
          for (bool inclusive : {false, true}) {
            std::vector<std::uint64_t> want = w.all_bits();
            for (std::size_t i = 0; i < n; ++i) {
              const double v = std::fabs(w.get(i));
              if (!std::isnan(v) && (inclusive ? v <= t : v < t)) want[i] = 0;
            }
            for (int threads : kThreads) {
              CONTEXT("threshold=", t, " inclusive=", inclusive, " threads=", threads);
              Array out(dtype, {static_cast<std::int64_t>(n)}, 2);
              pyprune::apply_threshold(w.view(), t, inclusive, out.data(), threads);
              CHECK_SEQ_EQ(out.all_bits(), want);
              Array in_place = w;
              pyprune::apply_threshold(in_place.view(), t, inclusive, in_place.data(), threads);
              CHECK_SEQ_EQ(in_place.all_bits(), want);
            }
          }
      }
}

TEST(count_nonzero_matches_reference) {
  for (DType dtype : kDTypes)
    for (std::size_t n : mask_sizes())
      for (Dist dist : {Dist::ties, Dist::specials, Dist::normal}) {
        CONTEXT(pyprune::dtype_name(dtype), " n=", n, " ", dist_name(dist));
        const Array w = make(dtype, {static_cast<std::int64_t>(n)}, dist, n + 11, n % 3);
        std::size_t want = 0;
        for (std::size_t i = 0; i < n; ++i) want += !(w.get(i) == 0.0);  // NaN counts
        for (int threads : kThreads) {
          CONTEXT("threads=", threads);
          CHECK_EQ(pyprune::count_nonzero(w.view(), threads), want);
        }
      }
}

TEST(keep_indices_match_reference) {
  for (std::size_t n : mask_sizes()) {
    CONTEXT("n=", n);
    const auto keep = random_keep(n, n + 3);
    std::vector<std::int64_t> want;
    for (std::size_t i = 0; i < n; ++i)
      if (keep[i]) want.push_back(static_cast<std::int64_t>(i));
    CHECK_SEQ_EQ(pyprune::keep_indices(keep.data(), n), want);
  }
}

TEST(error_apply_threshold_nan) {
  const Array w = make(DType::f32, {4}, Dist::normal, 1);
  Array out(DType::f32, {4});
  CHECK_THROWS(pyprune::apply_threshold(w.view(), kNaN, false, out.data(), 1), std::invalid_argument,
               "threshold is NaN");
}
