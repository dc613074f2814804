#include "pyprune/gather.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "pyprune/parallel.hpp"

namespace pyprune {

namespace {

struct Bytes16 {
  std::uint64_t lo, hi;
};

template <class E>
void gather_impl(const E* src, const std::vector<std::int64_t>& shape, const std::vector<AxisIndex>& index, E* dst,
                 int threads) {
  const int nd = static_cast<int>(shape.size());
  int g = -1;  // last gathered axis: everything after it is copied as one contiguous block
  for (int a = 0; a < nd; ++a)
    if (!index[a].all) g = a;
  std::vector<std::size_t> out_dim(nd), src_stride(nd);
  std::size_t out_total = 1, stride = 1;
  for (int a = nd - 1; a >= 0; --a) {
    src_stride[a] = stride;
    stride *= static_cast<std::size_t>(shape[a]);
    out_dim[a] = index[a].all ? static_cast<std::size_t>(shape[a]) : index[a].count;
    out_total *= out_dim[a];
  }
  if (out_total == 0) return;
  if (g < 0) {
    std::memcpy(dst, src, out_total * sizeof(E));
    return;
  }
  const std::size_t inner = src_stride[g];
  const std::size_t og = out_dim[g];
  const std::size_t rows = out_total / inner;  // output positions over axes 0..g
  const AxisIndex& gi = index[g];
  parallel_for(rows, threads, [&](std::size_t b, std::size_t e) {
    std::size_t r = b;
    while (r < e) {
      std::size_t outer = r / og, j = r % og;
      const std::size_t jend = std::min(og, j + (e - r));
      // Source offset of this outer position over axes 0..g-1.
      std::size_t base = 0;
      for (int a = g - 1; a >= 0; --a) {
        const std::size_t q = outer % out_dim[a];
        outer /= out_dim[a];
        base += static_cast<std::size_t>(index[a].all ? q : static_cast<std::size_t>(index[a].index[q])) * src_stride[a];
      }
      E* out = dst + r * inner;
      if (inner == 1) {
        const E* s = src + base;
        if (gi.all)
          for (std::size_t jj = j; jj < jend; ++jj) *out++ = s[jj];
        else
          for (std::size_t jj = j; jj < jend; ++jj) *out++ = s[gi.index[jj]];
      } else {
        for (std::size_t jj = j; jj < jend; ++jj, out += inner) {
          const std::size_t sj = gi.all ? jj : static_cast<std::size_t>(gi.index[jj]);
          std::memcpy(out, src + base + sj * inner, inner * sizeof(E));
        }
      }
      r += jend - j;
    }
  }, std::max<std::size_t>(1, (std::size_t{1} << 15) / inner));
}

}  // namespace

void gather(const void* src, std::size_t itemsize, const std::vector<std::int64_t>& shape,
            const std::vector<AxisIndex>& index, void* dst, int threads) {
  if (index.size() != shape.size()) throw std::invalid_argument("one index entry per axis is needed");
  for (std::size_t a = 0; a < shape.size(); ++a) {
    const AxisIndex& ix = index[a];
    if (ix.all) continue;
    for (std::size_t i = 0; i < ix.count; ++i)
      if (ix.index[i] < 0 || ix.index[i] >= shape[a])
        throw std::invalid_argument("index " + std::to_string(ix.index[i]) + " is out of range for axis " +
                                    std::to_string(a) + " of size " + std::to_string(shape[a]));
  }
  switch (itemsize) {
    case 1: return gather_impl(static_cast<const std::uint8_t*>(src), shape, index, static_cast<std::uint8_t*>(dst), threads);
    case 2: return gather_impl(static_cast<const std::uint16_t*>(src), shape, index, static_cast<std::uint16_t*>(dst), threads);
    case 4: return gather_impl(static_cast<const std::uint32_t*>(src), shape, index, static_cast<std::uint32_t*>(dst), threads);
    case 8: return gather_impl(static_cast<const std::uint64_t*>(src), shape, index, static_cast<std::uint64_t*>(dst), threads);
    case 16: return gather_impl(static_cast<const Bytes16*>(src), shape, index, static_cast<Bytes16*>(dst), threads);
    default: throw std::invalid_argument("unsupported element size " + std::to_string(itemsize));
  }
}

}  // namespace pyprune
