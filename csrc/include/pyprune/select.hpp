// Selection: the k lowest scores across many tensors (radix select on float bit patterns, no
// concatenation), the lowest slices of a score vector, and N:M masks.
#pragma once

#include <cstdint>
#include <vector>

#include "pyprune/tensor.hpp"

namespace pyprune {

// The k lowest across a list of tensors. Every element below `threshold` is selected; of the
// elements equal to it, the first ones in list order then flat index order, until exactly k are.
struct GlobalSelection {
  double threshold = 0;                // -inf when k == 0
  std::vector<std::int64_t> counts;    // selected per tensor (sums to k)
  std::vector<std::int64_t> ties;      // of counts[i], how many equal the threshold
};

// Orders elements by value, or by magnitude |x| when `magnitude`. NaN/Inf throw unless
// allow_nonfinite, in which case they rank above every finite value.
GlobalSelection global_select(const std::vector<Tensor>& scores, std::uint64_t k, bool magnitude,
                              bool allow_nonfinite, int threads);

// keep[i][j] = 0 for the selected elements of scores[i] (by value), 1 otherwise.
void global_masks(const std::vector<Tensor>& scores, std::uint64_t k, bool allow_nonfinite, int threads,
                  const std::vector<std::uint8_t*>& keep);

// Zeroes the k selected elements of the weights: by |w| when scores is empty, otherwise by the value
// of the matching score tensor. Returns the number zeroed per weight.
std::vector<std::int64_t> prune_global(const std::vector<MutableTensor>& weights, const std::vector<Tensor>& scores,
                                       std::uint64_t k, bool allow_nonfinite, int threads);

// Sorted indices of the k lowest entries of a score vector; equal scores: lower index first.
std::vector<std::int64_t> lowest_slices(const Tensor& scores, std::size_t k, bool allow_nonfinite);

// keep = 1 for the n largest of every m consecutive elements along axis (by |w| when magnitude,
// else by value); equal values keep the lower position. m must divide shape[axis].
void nm_mask(const Tensor& w, int n, int m, int axis, bool magnitude, bool allow_nonfinite, int threads,
             std::uint8_t* keep);

}  // namespace pyprune
