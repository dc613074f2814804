// Test data shared by the native tests: typed arrays placed at a chosen misalignment, value
// generators with ties and non-finite values, the sizes that straddle every vector width, and a loop
// over the SIMD variants. Values go in and out as double so one scalar reference serves every dtype.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "pyprune/simd.hpp"
#include "pyprune/tensor.hpp"

namespace support {

using pyprune::DType;

// Element counts around the 4-wide (SSE2) and 8-wide (AVX2) loops, their tails, and unrolled groups.
inline const std::vector<std::size_t> kSizes = {0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 1000, 4097};
inline const std::vector<int> kThreads = {1, 2, 3};
inline const std::vector<DType> kDTypes = {DType::f16, DType::f32, DType::f64};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Independent of pyprune::half_to_float: decodes the fields with ldexp.
inline double half_value(std::uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  double v;
  if (exponent == 0x1F)
    v = mantissa ? kNaN : kInf;
  else if (exponent == 0)
    v = std::ldexp(mantissa, -24);
  else
    v = std::ldexp(mantissa + 1024, exponent - 25);
  return sign ? -v : v;
}

// float -> half bits, truncating the mantissa: tests only need some half values, every one of
// which the reference then reads back exactly. Keeps -0, Inf and NaN.
inline std::uint16_t half_bits(double value) {
  const float f = static_cast<float>(value);
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return sign | 0x7E00u;
  if (ax >= 0x47800000u) return sign | 0x7C00u;  // >= 65536, or Inf
  if (ax < 0x33000000u) return sign;             // below half the smallest subnormal
  const int e = static_cast<int>(ax >> 23) - 127;
  const std::uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
  if (e < -14) return static_cast<std::uint16_t>(sign | (m >> (-1 - e)));
  return static_cast<std::uint16_t>(sign | ((e + 15) << 10) | ((ax >> 13) & 0x3FFu));
}

// A C-contiguous typed array whose data starts `misalign` elements past a 64-byte boundary.
class Array {
 public:
  Array() = default;
  Array(DType dtype, std::vector<std::int64_t> shape, std::size_t misalign = 0)
      : dtype_(dtype), shape_(std::move(shape)), misalign_(misalign) {
    n_ = 1;
    for (auto d : shape_) n_ *= static_cast<std::size_t>(d);
    allocate();
  }
  Array(const Array& o) : dtype_(o.dtype_), shape_(o.shape_), misalign_(o.misalign_), n_(o.n_) {
    allocate();
    std::memcpy(data_, o.data_, n_ * itemsize());
  }
  Array& operator=(const Array& o) {
    if (this != &o) {
      Array copy(o);
      swap(copy);
    }
    return *this;
  }
  Array(Array&&) = default;
  Array& operator=(Array&&) = default;

  DType dtype() const { return dtype_; }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  std::size_t size() const { return n_; }
  std::size_t itemsize() const { return pyprune::dtype_size(dtype_); }
  void* data() { return data_; }
  const void* data() const { return data_; }
  pyprune::Tensor view() const { return {data_, dtype_, shape_}; }
  pyprune::MutableTensor mut() { return {data_, dtype_, shape_}; }

  double get(std::size_t i) const {
    switch (dtype_) {
      case DType::f16: return half_value(static_cast<std::uint16_t>(bits(i)));
      case DType::f32: return load<float>(i);
      case DType::f64: return load<double>(i);
    }
    return kNaN;
  }
  void set(std::size_t i, double v) {
    switch (dtype_) {
      case DType::f16: set_bits(i, half_bits(v)); break;
      case DType::f32: store<float>(i, static_cast<float>(v)); break;
      case DType::f64: store<double>(i, v); break;
    }
  }
  std::uint64_t bits(std::size_t i) const {
    std::uint64_t b = 0;
    std::memcpy(&b, static_cast<const unsigned char*>(data_) + i * itemsize(), itemsize());  // little-endian
    return b;
  }
  void set_bits(std::size_t i, std::uint64_t b) {
    std::memcpy(static_cast<unsigned char*>(data_) + i * itemsize(), &b, itemsize());
  }
  std::vector<std::uint64_t> all_bits() const {
    std::vector<std::uint64_t> out(n_);
    for (std::size_t i = 0; i < n_; ++i) out[i] = bits(i);
    return out;
  }

 private:
  void allocate() {
    storage_.assign(n_ * itemsize() + misalign_ * itemsize() + 128, 0);
    const auto base = reinterpret_cast<std::uintptr_t>(storage_.data());
    const std::size_t pad = (64 - base % 64) % 64;
    data_ = storage_.data() + pad + misalign_ * itemsize();
  }
  template <class T>
  T load(std::size_t i) const {
    T v;
    std::memcpy(&v, static_cast<const unsigned char*>(data_) + i * sizeof(T), sizeof(T));
    return v;
  }
  template <class T>
  void store(std::size_t i, T v) {
    std::memcpy(static_cast<unsigned char*>(data_) + i * sizeof(T), &v, sizeof(T));
  }
  void swap(Array& o) {
    std::swap(dtype_, o.dtype_);
    std::swap(shape_, o.shape_);
    std::swap(misalign_, o.misalign_);
    std::swap(n_, o.n_);
    std::swap(storage_, o.storage_);
    std::swap(data_, o.data_);
  }

  DType dtype_ = DType::f32;
  std::vector<std::int64_t> shape_;
  std::size_t misalign_ = 0, n_ = 0;
  std::vector<unsigned char> storage_;
  void* data_ = nullptr;
};

// Value distributions: `normal` has (almost) no ties; `ties` draws from a handful of values including
// both zeros; `specials` is normal with NaN, +-Inf and +-0 sprinkled in; `constant` is one value.
enum class Dist { normal, ties, specials, constant };

inline const char* dist_name(Dist d) {
  switch (d) {
    case Dist::normal: return "normal";
    case Dist::ties: return "ties";
    case Dist::specials: return "specials";
    case Dist::constant: return "constant";
  }
  return "?";
}

inline void fill(Array& a, Dist dist, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int> pick(0, 99);
  static const double tie_values[] = {-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0};
  static const double special_values[] = {kNaN, -kNaN, kInf, -kInf, 0.0, -0.0};
  for (std::size_t i = 0; i < a.size(); ++i) {
    double v = normal(rng);
    switch (dist) {
      case Dist::normal: break;
      case Dist::ties: v = tie_values[pick(rng) % 7]; break;
      case Dist::specials:
        if (pick(rng) < 8) v = special_values[pick(rng) % 6];
        break;
      case Dist::constant: v = 1.5; break;
    }
    a.set(i, v);
  }
}

inline Array make(DType dtype, std::vector<std::int64_t> shape, Dist dist, std::uint64_t seed, std::size_t misalign = 0) {
  Array a(dtype, std::move(shape), misalign);
  fill(a, dist, seed);
  return a;
}

// Runs body once with the AVX2 variants (where the CPU has them) and once with the SSE2 baseline.
template <class Body>
void for_each_simd(Body&& body) {
  pyprune::simd::set_avx2_enabled(true);
  if (pyprune::simd::avx2_enabled()) {
    CONTEXT("simd=avx2");
    body();
  } else {
    static bool told = false;
    if (!told) std::printf("    note: this CPU has no AVX2; only the SSE2 variants run\n");
    told = true;
  }
  pyprune::simd::set_avx2_enabled(false);
  {
    CONTEXT("simd=sse2");
    body();
  }
  pyprune::simd::set_avx2_enabled(true);
}

// Non-finite values share the top rank; -0 ranks with +0. `magnitude` ranks |x|.
struct Rank {
  bool nonfinite;
  double v;
  bool operator<(const Rank& o) const { return nonfinite != o.nonfinite ? o.nonfinite : v < o.v; }
  bool operator==(const Rank& o) const { return nonfinite == o.nonfinite && (nonfinite || v == o.v); }
};

inline Rank rank_of(double x, bool magnitude) {
  if (!std::isfinite(x)) return {true, 0.0};
  double v = magnitude ? std::fabs(x) : x;
  if (v == 0) v = 0.0;
  return {false, v};
}

inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace support
