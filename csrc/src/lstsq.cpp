#include "pyprune/lstsq.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "pyprune/parallel.hpp"

namespace pyprune {

namespace {

constexpr std::size_t kRows = 256;  // rows packed per block (the packed panels stay in L2)
constexpr std::size_t kMr = 4;      // rows of a G tile
constexpr std::size_t kNr = 8;      // columns of a G (or C) tile

// Packs rows [r0, r0 + rows) of a (n, cols) matrix into panels of `width` columns: panel k holds
// rows x width doubles, row-major, zero-padded past the last column.
template <class S>
void pack(const S* src, std::size_t cols, std::size_t r0, std::size_t rows, std::size_t width,
          std::vector<double>& out) {
  const std::size_t panels = (cols + width - 1) / width;
  out.assign(panels * rows * width, 0.0);
  for (std::size_t r = 0; r < rows; ++r) {
    const S* row = src + (r0 + r) * cols;
    for (std::size_t j = 0; j < cols; ++j)
      out[(j / width) * rows * width + r * width + (j % width)] = static_cast<double>(elem<S>::load(row[j]));
  }
}

// acc[kMr][kNr] += sum_r a[r][:] (x) b[r][:]; written into dst rows i0.., columns j0.. (clipped).
inline void tile(const double* a, const double* b, std::size_t rows, double* dst, std::size_t ld,
                 std::size_t i_count, std::size_t j_count) {
  double acc[kMr][kNr] = {};
  for (std::size_t r = 0; r < rows; ++r) {
    const double* ar = a + r * kMr;
    const double* br = b + r * kNr;
    for (std::size_t i = 0; i < kMr; ++i)
      for (std::size_t j = 0; j < kNr; ++j) acc[i][j] += ar[i] * br[j];
  }
  for (std::size_t i = 0; i < i_count; ++i)
    for (std::size_t j = 0; j < j_count; ++j) dst[i * ld + j] += acc[i][j];
}

template <class S>
void accumulate(const Tensor& x, const Tensor* y, double* g, double* c, int threads) {
  const std::size_t n = static_cast<std::size_t>(x.shape[0]), p = static_cast<std::size_t>(x.shape[1]);
  const std::size_t q = y ? static_cast<std::size_t>(y->shape[1]) : 0;
  const std::size_t i_panels = (p + kMr - 1) / kMr;
  // Panels ordered 0, last, 1, last-1, ...: the upper-triangle work of G shrinks with the row, so
  // interleaving keeps the contiguous per-thread chunks of parallel_for balanced.
  std::vector<std::size_t> order;
  for (std::size_t lo = 0, hi = i_panels; lo < hi;) {
    order.push_back(lo++);
    if (lo < hi) order.push_back(--hi);
  }
  std::vector<double> a, b, t;
  for (std::size_t r0 = 0; r0 < n; r0 += kRows) {
    const std::size_t rows = std::min(kRows, n - r0);
    pack(x.as<S>(), p, r0, rows, kMr, a);
    pack(x.as<S>(), p, r0, rows, kNr, b);
    if (y) dispatch(y->dtype, [&](auto tag) { pack(y->as<decltype(tag)>(), q, r0, rows, kNr, t); });
    parallel_for(order.size(), threads, [&](std::size_t begin, std::size_t end) {
      for (std::size_t k = begin; k < end; ++k) {
        const std::size_t ip = order[k], i0 = ip * kMr, ic = std::min(kMr, p - i0);
        const double* ap = a.data() + ip * rows * kMr;
        for (std::size_t j0 = (i0 / kNr) * kNr; j0 < p; j0 += kNr)  // tiles on or above the diagonal
          tile(ap, b.data() + (j0 / kNr) * rows * kNr, rows, g + i0 * p + j0, p, ic, std::min(kNr, p - j0));
        for (std::size_t j0 = 0; j0 < q; j0 += kNr)
          tile(ap, t.data() + (j0 / kNr) * rows * kNr, rows, c + i0 * q + j0, q, ic, std::min(kNr, q - j0));
      }
    }, 1);
  }
  // Only entries on or above the diagonal are summed: mirror them below.
  for (std::size_t i = 1; i < p; ++i)
    for (std::size_t j = 0; j < i; ++j) g[i * p + j] = g[j * p + i];
}

}  // namespace

void gram_accumulate(const Tensor& x, const Tensor* y, double* g, double* c, int threads) {
  if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D (rows, features)");
  if (y) {
    if (y->ndim() != 2) throw std::invalid_argument("y must be 2-D (rows, targets)");
    if (y->shape[0] != x.shape[0])
      throw std::invalid_argument("x and y must have the same number of rows (" + std::to_string(x.shape[0]) +
                                  " vs " + std::to_string(y->shape[0]) + ")");
  }
  dispatch(x.dtype, [&](auto tag) { accumulate<decltype(tag)>(x, y, g, c, threads); });
}

}  // namespace pyprune
