// Structured removal: gather kept indices along any set of axes into a new compact array.
#pragma once

#include <cstdint>
#include <vector>

namespace pyprune {

// Indices kept along one axis; `all` keeps the whole axis.
struct AxisIndex {
  bool all = true;
  const std::int64_t* index = nullptr;  // values in [0, shape[axis])
  std::size_t count = 0;
};

// dst (C-contiguous, shape = per axis `all ? shape : count`) = src restricted to the index lists.
// Elements are moved as raw bytes, so any fixed-size element type works (itemsize 1, 2, 4, 8, 16).
void gather(const void* src, std::size_t itemsize, const std::vector<std::int64_t>& shape,
            const std::vector<AxisIndex>& index, void* dst, int threads);

}  // namespace pyprune
