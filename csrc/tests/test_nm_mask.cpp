// N:M masks against a scalar reference (a stable sort of each group). N:4 on float32 is vectorised
// along the last axis (rotations within a group) and along inner axes (columns compared lane by
// lane): 8 groups or columns per AVX2 step, 4 per SSE2 step, then scalar tails. Both variants run
// over group counts and inner extents around those widths, misaligned data, ties (-0 with +0),
// NaN/Inf, and 1-3 threads whose chunks end inside vector steps. Other m and dtypes are scalar.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "pyprune/select.hpp"
#include "support.hpp"

using namespace support;

namespace {

const std::string kNonfiniteW = "w contains NaN or Inf; pass nan='max' to treat them as most important";

std::vector<std::uint8_t> nm_reference(const Array& w, int n, int m, int axis, bool magnitude) {
  const auto& shape = w.shape();
  std::size_t outer = 1, inner = 1;
  for (int a = 0; a < axis; ++a) outer *= static_cast<std::size_t>(shape[a]);
  for (std::size_t a = static_cast<std::size_t>(axis) + 1; a < shape.size(); ++a) inner *= static_cast<std::size_t>(shape[a]);
  const std::size_t dim = static_cast<std::size_t>(shape[axis]);
  std::vector<std::uint8_t> keep(w.size(), 0);
  std::vector<int> pos(static_cast<std::size_t>(m));
  std::vector<Rank> ranks(static_cast<std::size_t>(m));
  for (std::size_t o = 0; o < outer; ++o)
    for (std::size_t g = 0; g < dim / static_cast<std::size_t>(m); ++g)
      for (std::size_t i = 0; i < inner; ++i) {
        auto index = [&](int j) { return (o * dim + g * static_cast<std::size_t>(m) + static_cast<std::size_t>(j)) * inner + i; };
        for (int j = 0; j < m; ++j) ranks[static_cast<std::size_t>(j)] = rank_of(w.get(index(j)), magnitude);
        std::iota(pos.begin(), pos.end(), 0);
        std::stable_sort(pos.begin(), pos.end(), [&](int a, int b) { return ranks[static_cast<std::size_t>(b)] < ranks[static_cast<std::size_t>(a)]; });
        for (int r = 0; r < n; ++r) keep[index(pos[static_cast<std::size_t>(r)])] = 1;
      }
  return keep;
}

struct NmCase {
  std::vector<std::int64_t> shape;
  int axis;
  bool large;  // big enough for 2 and 3 threads to split the groups
};

std::vector<NmCase> nm_cases(int m, bool large) {
  std::vector<NmCase> cases;
  for (std::size_t g : kSizes) cases.push_back({{static_cast<std::int64_t>(g) * m}, 0, false});
  for (std::int64_t g : {1, 7, 9, 17}) {
    cases.push_back({{3, g * m}, 1, false});
    cases.push_back({{2, 3, g * m}, 2, false});
  }
  for (std::int64_t inner : {2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33}) {
    cases.push_back({{1, m, inner}, 1, false});
    cases.push_back({{3, 2 * m, inner}, 1, false});
    cases.push_back({{2 * m, inner}, 0, false});
  }
  // Empty tensors along each position of the axis.
  cases.push_back({{0}, 0, false});
  cases.push_back({{m, 0}, 0, false});
  cases.push_back({{0, m}, 1, false});
  cases.push_back({{2, 0, 3}, 1, false});
  cases.push_back({{2, m, 0}, 1, false});
  // The kernel's chunks hold at least 16384 / (m * inner) blocks: a few blocks past three chunks
  // split over 3 threads at block counts that are not multiples of the vector widths.
  if (large) {
    const std::int64_t last_axis_groups = 3 * (16384 / m) + 5, inner_blocks = 3 * (16384 / (m * 9)) + 5;
    cases.push_back({{last_axis_groups * m}, 0, true});
    cases.push_back({{(inner_blocks + 1) / 2, 2 * m, 9}, 1, true});
  }
  return cases;
}

std::vector<int> ns_for(int m) {
  if (m <= 8) {
    std::vector<int> ns(static_cast<std::size_t>(m) + 1);
    std::iota(ns.begin(), ns.end(), 0);
    return ns;
  }
  return {0, 1, m / 2, m - 1, m};
}

// Misalignment only matters to the vector loops: the scalar paths run at one.
void check_nm(DType dtype, int m, const std::vector<Dist>& dists, bool large, bool vector_path) {
  for (const NmCase& c : nm_cases(m, large))
    for (std::size_t misalign : vector_path && !c.large ? std::vector<std::size_t>{0, 1, 3} : std::vector<std::size_t>{1})
      for (Dist dist : dists) {
        CONTEXT(pyprune::dtype_name(dtype), " m=", m, " shape=", shape_text(c.shape), " axis=", c.axis,
                " misalign=", misalign, " ", dist_name(dist));
        const Array w = make(dtype, c.shape, dist, c.shape.size() * 1000 + static_cast<std::size_t>(c.axis) + misalign, misalign);
        for (bool magnitude : {false, true})
          for (int n : ns_for(m)) {
            const auto want = nm_reference(w, n, m, c.axis, magnitude);
            for (int threads : kThreads) {
              CONTEXT("n=", n, " magnitude=", magnitude, " threads=", threads);
              std::vector<std::uint8_t> keep(w.size() + 1, 7);
              pyprune::nm_mask(w.view(), n, m, c.axis, magnitude, true, threads, keep.data());
              CHECK_EQ(keep.back(), std::uint8_t{7});
              keep.pop_back();
              CHECK_SEQ_EQ(keep, want);
            }
          }
      }
}

}  // namespace

TEST(nm_mask_n_of_4_float32_vector_paths) {
  for_each_simd([&] { check_nm(DType::f32, 4, {Dist::normal, Dist::ties, Dist::specials}, true, true); });
}

TEST(nm_mask_other_m_and_dtypes) {
  // Scalar paths: fixed m (2, 8, 16), any m (3, 5), m > 16 (partial sort), float16/float64 keys.
  // One fixed and one general m also split over threads.
  for (int m : {2, 8, 16, 3, 5, 32}) check_nm(DType::f32, m, {Dist::normal, Dist::ties, Dist::specials}, m == 2 || m == 5, false);
  for (DType dtype : {DType::f16, DType::f64})
    for (int m : {4, 3}) check_nm(dtype, m, {Dist::normal, Dist::ties, Dist::specials}, m == 4, false);
}

TEST(nm_mask_rejects_nonfinite_at_every_position) {
  for_each_simd([&] {
    const std::vector<NmCase> cases = {{{4}, 0, false},      {{8}, 0, false},      {{12}, 0, false},
                                       {{20}, 0, false},     {{32}, 0, false},     {{36}, 0, false},
                                       {{68}, 0, false},     {{1, 4, 4}, 1, false}, {{1, 4, 8}, 1, false},
                                       {{1, 4, 9}, 1, false}, {{1, 4, 17}, 1, false}, {{8, 3}, 0, false}};
    for (const NmCase& c : cases)
      for (double bad : {kNaN, kInf, -kInf}) {
        Array w = make(DType::f32, c.shape, Dist::normal, 5, 1);
        for (std::size_t p = 0; p < w.size(); ++p) {
          CONTEXT("shape=", shape_text(c.shape), " axis=", c.axis, " position=", p, " value=", bad);
          const std::uint64_t before = w.bits(p);
          w.set(p, bad);
          std::vector<std::uint8_t> keep(w.size());
          CHECK_THROWS(pyprune::nm_mask(w.view(), 2, 4, c.axis, true, false, 1, keep.data()), std::invalid_argument,
                       kNonfiniteW);
          CHECK_THROWS(pyprune::nm_mask(w.view(), 2, 4, c.axis, false, false, 1, keep.data()), std::invalid_argument,
                       kNonfiniteW);
          w.set_bits(p, before);
        }
      }
  });
}

TEST(error_nm_mask_bad_n_or_m) {
  const Array w = make(DType::f32, {2, 8}, Dist::normal, 1);
  std::vector<std::uint8_t> keep(16);
  CHECK_THROWS(pyprune::nm_mask(w.view(), 5, 4, 1, true, false, 1, keep.data()), std::invalid_argument,
               "need 0 <= n <= m and m >= 1, got n=5, m=4");
  CHECK_THROWS(pyprune::nm_mask(w.view(), -1, 4, 1, true, false, 1, keep.data()), std::invalid_argument,
               "need 0 <= n <= m and m >= 1, got n=-1, m=4");
  CHECK_THROWS(pyprune::nm_mask(w.view(), 0, 0, 1, true, false, 1, keep.data()), std::invalid_argument,
               "need 0 <= n <= m and m >= 1, got n=0, m=0");
}

TEST(error_nm_mask_m_does_not_divide_axis) {
  const Array w = make(DType::f32, {6, 8}, Dist::normal, 1);
  std::vector<std::uint8_t> keep(48);
  CHECK_THROWS(pyprune::nm_mask(w.view(), 2, 4, 0, true, false, 1, keep.data()), std::invalid_argument,
               "m=4 does not divide the axis size 6");
  CHECK_THROWS(pyprune::nm_mask(w.view(), 1, 3, 1, true, false, 1, keep.data()), std::invalid_argument,
               "m=3 does not divide the axis size 8");
}

TEST(error_nm_mask_axis_out_of_range) {
  const Array w = make(DType::f32, {4, 8}, Dist::normal, 1);
  std::vector<std::uint8_t> keep(32);
  CHECK_THROWS(pyprune::nm_mask(w.view(), 2, 4, 2, true, false, 1, keep.data()), std::invalid_argument,
               "axis 2 is out of range for a 2-D tensor");
  CHECK_THROWS(pyprune::nm_mask(w.view(), 2, 4, -1, true, false, 1, keep.data()), std::invalid_argument,
               "axis -1 is out of range for a 2-D tensor");
}

TEST(error_nm_mask_nonfinite) {
  Array w = make(DType::f64, {2, 4}, Dist::normal, 1);
  w.set(6, kNaN);
  std::vector<std::uint8_t> keep(8);
  CHECK_THROWS(pyprune::nm_mask(w.view(), 2, 4, 1, true, false, 1, keep.data()), std::invalid_argument, kNonfiniteW);
}
