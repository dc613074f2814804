// Importance scores: per element, per slice (norms along any axes), activation-aware, FPGM, random.
#pragma once

#include <cstdint>
#include <vector>

#include "pyprune/tensor.hpp"

namespace pyprune {

enum class Norm { l1, l2, linf, mean };

// out[i] = |w[i]| or w[i]^2 (float32). Non-finite input throws unless allow_nonfinite (then +inf).
void element_scores(const Tensor& w, float* out, bool square, bool allow_nonfinite, int threads);

// One norm per slice indexed by kept_axes (strictly increasing), reducing over every other axis.
// out holds prod(shape[kept_axes]) values in row-major order of the kept axes. A slice containing
// NaN/Inf throws unless allow_nonfinite (then it scores +inf).
void slice_norms(const Tensor& w, const std::vector<int>& kept_axes, Norm ord, bool allow_nonfinite,
                 int threads, double* out);

// out = |w| * input_norms broadcast along axis (input_norms has w.shape[axis] entries).
void wanda_scores(const Tensor& w, const float* input_norms, int axis, bool allow_nonfinite, int threads,
                  float* out);

// FPGM: for each filter i along axis, the sum of L2 distances to every other filter (out[shape[axis]]).
// With allow_nonfinite, filters holding NaN/Inf score +inf and are left out of the others' sums.
void fpgm_scores(const Tensor& w, int axis, bool allow_nonfinite, int threads, double* out);

// Uniform [0, 1) float32 scores; out[i] depends only on (seed, i) (counter-based splitmix64).
void random_scores(std::size_t n, std::uint64_t seed, int threads, float* out);

}  // namespace pyprune
