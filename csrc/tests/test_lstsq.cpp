// gram_accumulate against a plain double loop: every element type, shapes around the register
// tiles (4 x 8) and the packed row blocks (256), 1-3 threads, accumulation over calls, no y.
#include <cstdint>
#include <type_traits>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "pyprune/lstsq.hpp"
#include "support.hpp"

using pyprune::DType;
using pyprune::Tensor;

namespace {

template <class S>
std::vector<S> random_matrix(std::size_t rows, std::size_t cols, std::mt19937& gen, std::vector<double>& as_double) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<S> out(rows * cols);
  as_double.resize(rows * cols);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const float v = dist(gen);
    if constexpr (std::is_same_v<S, pyprune::half>) {
      out[i] = pyprune::half{support::half_bits(v)};
      as_double[i] = support::half_value(out[i].bits);
    } else {
      out[i] = static_cast<S>(v);
      as_double[i] = static_cast<double>(out[i]);
    }
  }
  return out;
}

template <class S>
void check_type(DType dtype) {
  std::mt19937 gen(7);
  for (std::size_t rows : {1, 3, 255, 256, 257, 700})
    for (std::size_t p : {1, 3, 4, 5, 8, 9, 17})
      for (std::size_t q : {0, 1, 7, 9})
        for (int threads : {1, 2, 3}) {
          CONTEXT(pyprune::dtype_name(dtype), " rows=", rows, " p=", p, " q=", q, " threads=", threads);
          std::vector<double> xd, yd;
          const auto x = random_matrix<S>(rows, p, gen, xd);
          const auto y = random_matrix<S>(rows, q, gen, yd);
          const Tensor tx{x.data(), dtype, {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(p)}};
          const Tensor ty{y.data(), dtype, {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(q)}};
          std::vector<double> g(p * p, 1.0), c(p * q, -1.0);  // accumulated into, not overwritten
          pyprune::gram_accumulate(tx, q ? &ty : nullptr, g.data(), q ? c.data() : nullptr, threads);
          bool ok = true;
          for (std::size_t i = 0; i < p; ++i) {
            for (std::size_t j = 0; j < p; ++j) {
              double want = 1.0;
              for (std::size_t r = 0; r < rows; ++r) want += xd[r * p + i] * xd[r * p + j];
              ok &= check::near(g[i * p + j], want, 1e-12, 1e-9);
            }
            for (std::size_t j = 0; j < q; ++j) {
              double want = -1.0;
              for (std::size_t r = 0; r < rows; ++r) want += xd[r * p + i] * yd[r * q + j];
              ok &= check::near(c[i * q + j], want, 1e-12, 1e-9);
            }
          }
          CHECK(ok);
        }
}

}  // namespace

TEST(gram_accumulate_equals_a_double_loop) {
  check_type<float>(DType::f32);
  check_type<double>(DType::f64);
  check_type<pyprune::half>(DType::f16);
}

TEST(gram_accumulate_refuses_mismatched_shapes) {
  std::vector<float> x(12), y(10);
  const Tensor tx{x.data(), DType::f32, {4, 3}};
  const Tensor ty{y.data(), DType::f32, {5, 2}};
  std::vector<double> g(9), c(6);
  CHECK_THROWS(pyprune::gram_accumulate(tx, &ty, g.data(), c.data(), 1), std::invalid_argument,
               "x and y must have the same number of rows (4 vs 5)");
  const Tensor flat{x.data(), DType::f32, {12}};
  CHECK_THROWS(pyprune::gram_accumulate(flat, nullptr, g.data(), nullptr, 1), std::invalid_argument,
               "x must be 2-D (rows, features)");
}
