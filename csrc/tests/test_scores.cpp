// Importance kernels against scalar references: element scores, slice norms along every axis set,
// activation-aware (Wanda) scores, FPGM and counter-based random scores, for every dtype, awkward
// sizes and 1-3 threads; NaN/Inf either throw or score +inf as documented.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "pyprune/scores.hpp"
#include "support.hpp"

using namespace support;
using pyprune::Norm;

namespace {

const std::string kNonfiniteW = "w contains NaN or Inf; pass nan='max' to treat them as most important";
constexpr float kInfF = std::numeric_limits<float>::infinity();

// |x| or x^2 as the kernels compute it: in float for float16/float32, in double for float64.
float element_reference(const Array& w, std::size_t i, bool square) {
  const double v = w.get(i);
  if (!std::isfinite(v)) return kInfF;
  if (w.dtype() == DType::f64) return static_cast<float>(square ? v * v : std::fabs(v));
  const float f = static_cast<float>(v);
  return square ? f * f : std::fabs(f);
}

const char* norm_name(Norm n) {
  switch (n) {
    case Norm::l1: return "l1";
    case Norm::l2: return "l2";
    case Norm::linf: return "linf";
    case Norm::mean: return "mean";
  }
  return "?";
}

// Norm of every slice indexed by the kept axes, by walking the multi-index of each element.
std::vector<double> norms_reference(const Array& w, const std::vector<int>& kept, Norm ord) {
  const auto& shape = w.shape();
  std::size_t out_size = 1;
  for (int a : kept) out_size *= static_cast<std::size_t>(shape[static_cast<std::size_t>(a)]);
  const std::size_t reduced = w.size() / std::max<std::size_t>(1, out_size);
  std::vector<double> acc(out_size, 0.0);
  std::vector<char> bad(out_size, 0);
  std::vector<std::size_t> idx(shape.size(), 0);
  for (std::size_t i = 0; i < w.size(); ++i) {
    std::size_t o = 0;
    for (int a : kept) o = o * static_cast<std::size_t>(shape[static_cast<std::size_t>(a)]) + idx[static_cast<std::size_t>(a)];
    const double v = w.get(i);
    if (!std::isfinite(v)) bad[o] = 1;
    const double m = std::fabs(v);
    if (ord == Norm::linf)
      acc[o] = std::max(acc[o], m);
    else
      acc[o] += ord == Norm::l2 ? v * v : m;
    for (std::size_t a = shape.size(); a-- > 0;)
      if (++idx[a] < static_cast<std::size_t>(shape[a])) break;
      else idx[a] = 0;
  }
  for (std::size_t o = 0; o < out_size; ++o) {
    if (ord == Norm::l2) acc[o] = std::sqrt(acc[o]);
    if (ord == Norm::mean) acc[o] /= static_cast<double>(reduced);
    if (bad[o] || !std::isfinite(acc[o])) acc[o] = kInf;
  }
  return acc;
}

struct NormCase {
  std::vector<std::int64_t> shape;
  std::vector<std::vector<int>> kept;
};

std::vector<NormCase> norm_cases() {
  std::vector<NormCase> cases;
  for (std::size_t n : kSizes)
    if (n) cases.push_back({{static_cast<std::int64_t>(n)}, {{}, {0}}});
  for (std::int64_t a : {1, 3, 8, 17})
    for (std::int64_t b : {1, 2, 7, 33}) cases.push_back({{a, b}, {{}, {0}, {1}, {0, 1}}});
  const std::vector<std::vector<int>> all3 = {{}, {0}, {1}, {2}, {0, 1}, {0, 2}, {1, 2}, {0, 1, 2}};
  for (auto shape : std::vector<std::vector<std::int64_t>>{{3, 5, 7}, {1, 9, 1}, {4, 1, 9}, {2, 16, 3}, {5, 3, 1}})
    cases.push_back({shape, all3});
  cases.push_back({{2, 3, 1, 4}, {{1, 3}, {0, 2}, {3}, {0, 1, 2, 3}}});
  // Row splits over 3 threads: rows of one reduced run, rows accumulating a kept last axis.
  cases.push_back({{32771, 3}, {{0}, {1}}});
  cases.push_back({{40000, 5}, {{1}, {0}}});
  return cases;
}

}  // namespace

TEST(element_scores_match_reference) {
  for (DType dtype : kDTypes)
    for (std::size_t n : kSizes)
      for (Dist dist : {Dist::normal, Dist::specials}) {
        CONTEXT(pyprune::dtype_name(dtype), " n=", n, " ", dist_name(dist));
        const Array w = make(dtype, {static_cast<std::int64_t>(n)}, dist, n + 1, n % 4);
        for (bool square : {false, true}) {
          std::vector<float> want(n);
          for (std::size_t i = 0; i < n; ++i) want[i] = element_reference(w, i, square);
          for (int threads : kThreads) {
            CONTEXT("square=", square, " threads=", threads);
            std::vector<float> out(n, -1.0f);
            pyprune::element_scores(w.view(), out.data(), square, true, threads);
            CHECK_SEQ_EQ(out, want);
          }
        }
      }
}

TEST(element_scores_reject_nonfinite_in_any_chunk) {
  const std::size_t n = 3 * 32768 + 7;
  for (std::size_t p : {std::size_t{0}, std::size_t{40000}, n - 1})
    for (int threads : kThreads) {
      CONTEXT("position=", p, " threads=", threads);
      Array w = make(DType::f32, {static_cast<std::int64_t>(n)}, Dist::normal, 3, 1);
      w.set(p, -kInf);
      std::vector<float> out(n);
      CHECK_THROWS(pyprune::element_scores(w.view(), out.data(), false, false, threads), std::invalid_argument,
                   kNonfiniteW);
    }
}

TEST(slice_norms_match_reference) {
  for (DType dtype : kDTypes)
    for (const NormCase& c : norm_cases())
      for (Dist dist : {Dist::normal, Dist::ties, Dist::specials}) {
        CONTEXT(pyprune::dtype_name(dtype), " shape=", shape_text(c.shape), " ", dist_name(dist));
        const Array w = make(dtype, c.shape, dist, c.shape.size() * 17 + static_cast<std::size_t>(c.shape[0]), 1);
        for (const auto& kept : c.kept)
          for (Norm ord : {Norm::l1, Norm::l2, Norm::linf, Norm::mean}) {
            const auto want = norms_reference(w, kept, ord);
            for (int threads : kThreads) {
              CONTEXT("kept axes=", kept.size() ? kept[0] : -1, kept.size() > 1 ? "+" : "", " of ", kept.size(),
                      " ord=", norm_name(ord), " threads=", threads);
              std::vector<double> out(want.size() + 1, -7.0);
              pyprune::slice_norms(w.view(), kept, ord, true, threads, out.data());
              CHECK_EQ(out.back(), -7.0);
              bool close = true;
              std::size_t first = 0;
              for (std::size_t o = 0; o < want.size(); ++o)
                if (!check::near(out[o], want[o], 1e-12, 0.0) && close) {
                  close = false;
                  first = o;
                }
              CHECK(close);
              if (!close) CHECK_NEAR(out[first], want[first], 1e-12, 0.0);
            }
          }
      }
}

TEST(slice_norms_nonfinite_throws_but_float64_overflow_does_not) {
  Array w = make(DType::f64, {3, 4}, Dist::normal, 1);
  w.set(5, kNaN);
  std::vector<double> out(3);
  for (Norm ord : {Norm::l1, Norm::l2, Norm::linf, Norm::mean}) {
    CONTEXT("ord=", norm_name(ord));
    CHECK_THROWS(pyprune::slice_norms(w.view(), {0}, ord, false, 1, out.data()), std::invalid_argument, kNonfiniteW);
  }
  // Finite input whose norm overflows is not an error; it scores +inf.
  Array big(DType::f64, {2, 2});
  for (std::size_t i = 0; i < 4; ++i) big.set(i, i < 2 ? 1e200 : 1.0);
  pyprune::slice_norms(big.view(), {0}, Norm::l2, false, 1, out.data());
  CHECK_EQ(out[0], kInf);
  CHECK_EQ(out[1], std::sqrt(2.0));
}

TEST(error_slice_norms_axis_out_of_range) {
  const Array w = make(DType::f32, {2, 3}, Dist::normal, 1);
  std::vector<double> out(6);
  CHECK_THROWS(pyprune::slice_norms(w.view(), {2}, Norm::l1, false, 1, out.data()), std::invalid_argument,
               "axis 2 is out of range for a 2-D tensor");
  CHECK_THROWS(pyprune::slice_norms(w.view(), {-1}, Norm::l1, false, 1, out.data()), std::invalid_argument,
               "axis -1 is out of range for a 2-D tensor");
}

TEST(error_slice_norms_axes_not_increasing) {
  const Array w = make(DType::f32, {2, 3}, Dist::normal, 1);
  std::vector<double> out(6);
  CHECK_THROWS(pyprune::slice_norms(w.view(), {1, 0}, Norm::l2, false, 1, out.data()), std::invalid_argument,
               "kept axes must be strictly increasing");
  CHECK_THROWS(pyprune::slice_norms(w.view(), {1, 1}, Norm::l2, false, 1, out.data()), std::invalid_argument,
               "kept axes must be strictly increasing");
}

TEST(error_slice_norms_empty) {
  const Array w(DType::f32, {3, 0});
  std::vector<double> out(3);
  CHECK_THROWS(pyprune::slice_norms(w.view(), {0}, Norm::l1, false, 1, out.data()), std::invalid_argument,
               "w is empty");
}

TEST(wanda_scores_match_reference) {
  const std::vector<std::vector<std::int64_t>> shapes = {{7}, {33}, {3, 17}, {16, 9}, {2, 5, 31}, {4097, 1},
                                                         {1, 4097}, {3, 33000}, {40000, 3}};
  for (DType dtype : kDTypes)
    for (const auto& shape : shapes)
      for (int axis = 0; axis < static_cast<int>(shape.size()); ++axis)
        for (Dist dist : {Dist::normal, Dist::specials}) {
          CONTEXT(pyprune::dtype_name(dtype), " shape=", shape_text(shape), " axis=", axis, " ", dist_name(dist));
          const Array w = make(dtype, shape, dist, shape.size() + static_cast<std::size_t>(axis), 3);
          const std::size_t dim = static_cast<std::size_t>(shape[static_cast<std::size_t>(axis)]);
          std::size_t inner = 1;
          for (std::size_t a = static_cast<std::size_t>(axis) + 1; a < shape.size(); ++a) inner *= static_cast<std::size_t>(shape[a]);
          std::vector<float> norms(dim);
          for (std::size_t j = 0; j < dim; ++j) norms[j] = 0.25f * static_cast<float>(j % 7);  // zeros included
          std::vector<float> want(w.size());
          for (std::size_t i = 0; i < w.size(); ++i) {
            const float scale = norms[(i / inner) % dim];
            const double v = w.get(i);
            want[i] = !std::isfinite(v) ? kInfF : element_reference(w, i, false) * scale;
          }
          for (int threads : kThreads) {
            CONTEXT("threads=", threads);
            std::vector<float> out(w.size(), -1.0f);
            pyprune::wanda_scores(w.view(), norms.data(), axis, true, threads, out.data());
            CHECK_SEQ_EQ(out, want);
          }
        }
}

TEST(error_wanda_scores_axis_out_of_range) {
  const Array w = make(DType::f32, {2, 3}, Dist::normal, 1);
  std::vector<float> norms(3), out(6);
  CHECK_THROWS(pyprune::wanda_scores(w.view(), norms.data(), 2, false, 1, out.data()), std::invalid_argument,
               "axis 2 is out of range for a 2-D tensor");
}

TEST(error_wanda_scores_nonfinite) {
  Array w = make(DType::f16, {2, 3}, Dist::normal, 1);
  w.set(4, kInf);
  std::vector<float> norms(3, 1.0f), out(6);
  CHECK_THROWS(pyprune::wanda_scores(w.view(), norms.data(), 1, false, 1, out.data()), std::invalid_argument,
               kNonfiniteW);
}

TEST(fpgm_scores_match_reference) {
  const std::vector<std::vector<std::int64_t>> shapes = {{1}, {7}, {3, 1}, {5, 9}, {4, 3, 3}, {2, 17, 3}, {33, 2}};
  for (DType dtype : kDTypes)
    for (const auto& shape : shapes)
      for (int axis = 0; axis < static_cast<int>(shape.size()); ++axis)
        for (Dist dist : {Dist::normal, Dist::ties, Dist::specials}) {
          CONTEXT(pyprune::dtype_name(dtype), " shape=", shape_text(shape), " axis=", axis, " ", dist_name(dist));
          const Array w = make(dtype, shape, dist, 40 + shape.size() + static_cast<std::size_t>(axis), 1);
          const std::size_t k = static_cast<std::size_t>(shape[static_cast<std::size_t>(axis)]);
          std::size_t inner = 1;
          for (std::size_t a = static_cast<std::size_t>(axis) + 1; a < shape.size(); ++a) inner *= static_cast<std::size_t>(shape[a]);
          // filters[f] lists filter f's values in flat order.
          std::vector<std::vector<double>> filters(k);
          std::vector<char> bad(k, 0);
          for (std::size_t i = 0; i < w.size(); ++i) {
            const std::size_t f = (i / inner) % k;
            filters[f].push_back(w.get(i));
            bad[f] |= !std::isfinite(w.get(i));
          }
          std::vector<double> want(k, 0.0);
          for (std::size_t f = 0; f < k; ++f) {
            if (bad[f]) {
              want[f] = kInf;
              continue;
            }
            for (std::size_t g = 0; g < k; ++g) {
              if (g == f || bad[g]) continue;
              double s = 0;
              for (std::size_t t = 0; t < filters[f].size(); ++t) s += (filters[f][t] - filters[g][t]) * (filters[f][t] - filters[g][t]);
              want[f] += std::sqrt(s);
            }
          }
          for (int threads : kThreads) {
            CONTEXT("threads=", threads);
            std::vector<double> out(k, -1.0);
            pyprune::fpgm_scores(w.view(), axis, true, threads, out.data());
            for (std::size_t f = 0; f < k; ++f) CHECK_NEAR(out[f], want[f], 1e-12, 1e-300);
          }
        }
}

TEST(error_fpgm_scores_axis_out_of_range) {
  const Array w = make(DType::f32, {2, 3}, Dist::normal, 1);
  std::vector<double> out(3);
  CHECK_THROWS(pyprune::fpgm_scores(w.view(), 3, false, 1, out.data()), std::invalid_argument,
               "axis 3 is out of range for a 2-D tensor");
}

TEST(error_fpgm_scores_nonfinite) {
  Array w = make(DType::f32, {3, 2}, Dist::normal, 1);
  w.set(3, kNaN);
  std::vector<double> out(3);
  CHECK_THROWS(pyprune::fpgm_scores(w.view(), 0, false, 1, out.data()), std::invalid_argument, kNonfiniteW);
}

TEST(random_scores_are_a_fixed_counter_based_stream) {
  // Pinned: seeded runs must give the same scores on every machine, thread count and length.
  auto mix = [](std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  const std::uint64_t golden = 0x9E3779B97F4A7C15ull;
  for (std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{12345}, ~std::uint64_t{0}})
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{17}, std::size_t{4097}, std::size_t{3 * 32768 + 1}}) {
      const std::uint64_t base = mix(seed + golden);
      std::vector<float> want(n);
      for (std::size_t i = 0; i < n; ++i)
        want[i] = static_cast<float>(static_cast<double>(mix(base + (i + 1) * golden) >> 40) * 0x1.0p-24);
      for (int threads : kThreads) {
        CONTEXT("seed=", seed, " n=", n, " threads=", threads);
        std::vector<float> out(n, -1.0f);
        pyprune::random_scores(n, seed, threads, out.data());
        CHECK_SEQ_EQ(out, want);
        CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x >= 0.0f && x < 1.0f; }));
      }
    }
}
