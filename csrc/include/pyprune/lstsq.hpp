// Least-squares sums streamed from activations: G += X^T X and C += X^T Y in float64.
//
// Recovery re-fits a layer's weights so that its output on the calibration data matches the
// unpruned one (ridge least squares, and the OBS/SparseGPT update from the input Hessian). Both
// need only the Gram matrix of the layer's input rows and their cross product with the targets,
// which are accumulated here batch by batch: float16/32/64 rows are read in place and summed in
// float64 (no float64 copy of the batch), in register tiles, several threads each owning rows of G.
#pragma once

#include <cstddef>

#include "pyprune/tensor.hpp"

namespace pyprune {

// x: (n, p) rows; y: (n, q) targets or null (q = 0). g: p*p float64 (row-major, accumulated and
// left symmetric); c: p*q float64 (accumulated; ignored when y is null). x and y share dtype
// rules: float16/32/64, C-contiguous. Throws std::invalid_argument on shape mismatches.
void gram_accumulate(const Tensor& x, const Tensor* y, double* g, double* c, int threads);

}  // namespace pyprune
