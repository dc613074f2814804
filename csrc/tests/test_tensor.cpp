// The shared tensor header: float16 decoding (every bit pattern), dtype helpers and the axis split.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "check.hpp"
#include "pyprune/tensor.hpp"
#include "support.hpp"

using namespace support;
using pyprune::DType;

TEST(half_to_float_is_exact_for_every_bit_pattern) {
  long wrong = 0;
  std::uint32_t first_wrong = 0;
  for (std::uint32_t h = 0; h <= 0xFFFFu; ++h) {
    const float got = pyprune::half_to_float(static_cast<std::uint16_t>(h));
    std::uint32_t got_bits;
    std::memcpy(&got_bits, &got, 4);
    const double want = half_value(static_cast<std::uint16_t>(h));
    bool ok;
    if (std::isnan(want)) {
      // NaN stays NaN with its sign (a signalling payload comes out quiet, as in hardware conversion).
      ok = std::isnan(got) && (got_bits >> 31) == (h >> 15);
    } else {
      ok = static_cast<double>(got) == want && std::signbit(got) == std::signbit(want);
    }
    if (!ok && wrong++ == 0) first_wrong = h;
  }
  CONTEXT("first wrong pattern 0x", std::hex, first_wrong);
  CHECK_EQ(wrong, 0L);
}

TEST(element_traits) {
  CHECK(pyprune::elem<pyprune::half>::finite(pyprune::half{0x7BFF}));
  CHECK(!pyprune::elem<pyprune::half>::finite(pyprune::half{0xFC00}));
  CHECK(!pyprune::elem<pyprune::half>::finite(pyprune::half{0x7E01}));
  CHECK(pyprune::elem<float>::finite(3.4e38f));
  CHECK(!pyprune::elem<float>::finite(static_cast<float>(kInf)));
  CHECK(!pyprune::elem<double>::finite(kNaN));
  CHECK(pyprune::elem<double>::finite(-0.0));
  CHECK_EQ(pyprune::dtype_size(DType::f16), std::size_t{2});
  CHECK_EQ(pyprune::dtype_size(DType::f32), std::size_t{4});
  CHECK_EQ(pyprune::dtype_size(DType::f64), std::size_t{8});
  CHECK_EQ(std::string(pyprune::dtype_name(DType::f16)), std::string("float16"));
  CHECK_EQ(std::string(pyprune::dtype_name(DType::f64)), std::string("float64"));
}

TEST(split_at_collapses_around_the_axis) {
  const auto s = pyprune::split_at({2, 3, 5, 7}, 2);
  CHECK_EQ(s.outer, std::size_t{6});
  CHECK_EQ(s.dim, std::size_t{5});
  CHECK_EQ(s.inner, std::size_t{7});
  const auto first = pyprune::split_at({4}, 0);
  CHECK_EQ(first.outer * first.dim * first.inner, std::size_t{4});
}

TEST(error_split_at_axis_out_of_range) {
  CHECK_THROWS(pyprune::split_at({2, 3}, 2), std::invalid_argument, "axis 2 is out of range for a 2-D tensor");
  CHECK_THROWS(pyprune::split_at({}, 0), std::invalid_argument, "axis 0 is out of range for a 0-D tensor");
}

TEST(error_dispatch_unknown_dtype) {
  CHECK_THROWS(pyprune::dispatch(static_cast<DType>(7), [](auto) {}), std::invalid_argument, "unknown dtype");
}
