// Raw-buffer views, element types and the float16 conversion shared by every kernel.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace pyprune {

enum class DType { f16, f32, f64 };

// float16 storage: kernels read and write the bit pattern and compute in float32.
struct half {
  std::uint16_t bits;
};

// A read-only C-contiguous tensor: the kernels never see strides or Python objects.
struct Tensor {
  const void* data = nullptr;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;

  std::size_t size() const {
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }
  int ndim() const { return static_cast<int>(shape.size()); }
  template <class T>
  const T* as() const { return static_cast<const T*>(data); }
};

// The same view over a writable buffer.
struct MutableTensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;

  std::size_t size() const { return Tensor{data, dtype, shape}.size(); }
  Tensor view() const { return Tensor{data, dtype, shape}; }
  template <class T>
  T* as() const { return static_cast<T*>(data); }
};

template <class To, class From>
inline To bit_cast(const From& v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}

// Branch-free IEEE half -> float (exact for every value, including subnormals, Inf and NaN).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t w = static_cast<std::uint32_t>(h) << 16;
  const std::uint32_t sign = w & 0x80000000u;
  const std::uint32_t two_w = w + w;
  const float normalized = bit_cast<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = bit_cast<float>((two_w >> 17) | (126u << 23)) - 0.5f;
  const std::uint32_t magnitude =
      two_w < (1u << 27) ? bit_cast<std::uint32_t>(denormalized) : bit_cast<std::uint32_t>(normalized);
  return bit_cast<float>(sign | magnitude);
}

// Element type traits: storage type S, compute type (float for half/float, double for double).
template <class S>
struct elem;
template <>
struct elem<half> {
  using compute = float;
  using bits = std::uint16_t;
  static float load(half v) { return half_to_float(v.bits); }
  static bool finite(half v) { return (v.bits & 0x7C00u) != 0x7C00u; }
};
template <>
struct elem<float> {
  using compute = float;
  using bits = std::uint32_t;
  static float load(float v) { return v; }
  static bool finite(float v) { return (bit_cast<std::uint32_t>(v) & 0x7F800000u) != 0x7F800000u; }
};
template <>
struct elem<double> {
  using compute = double;
  using bits = std::uint64_t;
  static double load(double v) { return v; }
  static bool finite(double v) {
    return (bit_cast<std::uint64_t>(v) & 0x7FF0000000000000ull) != 0x7FF0000000000000ull;
  }
};

// Calls fn(S{}) with the storage type of dtype.
template <class Fn>
decltype(auto) dispatch(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f16: return fn(half{});
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
  }
  throw std::invalid_argument("unknown dtype");
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::f16: return "float16";
    case DType::f32: return "float32";
    case DType::f64: return "float64";
  }
  return "?";
}

inline std::size_t dtype_size(DType d) { return d == DType::f16 ? 2 : d == DType::f32 ? 4 : 8; }

// Error for a tensor holding NaN/Inf when the caller asked for them to be rejected.
[[noreturn]] inline void throw_nonfinite(const std::string& what) {
  throw std::invalid_argument(what + " contains NaN or Inf; pass nan='max' to treat them as most important");
}

// Collapses a tensor's dims into [outer, axis, inner] around one axis.
struct AxisSplit {
  std::size_t outer, dim, inner;
};
inline AxisSplit split_at(const std::vector<std::int64_t>& shape, int axis) {
  if (axis < 0 || axis >= static_cast<int>(shape.size()))
    throw std::invalid_argument("axis " + std::to_string(axis) + " is out of range for a " +
                                std::to_string(shape.size()) + "-D tensor");
  AxisSplit s{1, static_cast<std::size_t>(shape[axis]), 1};
  for (int i = 0; i < axis; ++i) s.outer *= static_cast<std::size_t>(shape[i]);
  for (std::size_t i = axis + 1; i < shape.size(); ++i) s.inner *= static_cast<std::size_t>(shape[i]);
  return s;
}

}  // namespace pyprune
