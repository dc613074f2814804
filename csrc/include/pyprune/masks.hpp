// Masks: apply a keep-mask or a magnitude threshold, count non-zeros, slice mask -> indices.
#pragma once

#include <cstdint>
#include <vector>

#include "pyprune/tensor.hpp"

namespace pyprune {

// out[i] = keep[i] ? w[i] : 0. out has w's dtype and size and may be w's own buffer.
void apply_mask(const Tensor& w, const std::uint8_t* keep, void* out, int threads);

// out[i] = 0 where |w[i]| < threshold (<= when inclusive), else w[i]; NaN is kept. out may alias w.
void apply_threshold(const Tensor& w, double threshold, bool inclusive, void* out, int threads);

// Elements that are not +-0 (NaN counts as non-zero).
std::size_t count_nonzero(const Tensor& w, int threads);

// Sorted indices of the non-zero bytes of a mask.
std::vector<std::int64_t> keep_indices(const std::uint8_t* mask, std::size_t n);

}  // namespace pyprune
