// Run-time choice of the SIMD variants: the AVX2 kernels are compiled next to the SSE2 baseline and
// used when the CPU has AVX2. Turning them off lets the baseline be tested and timed on AVX2 machines.
#pragma once

namespace pyprune::simd {

// Whether kernels use their AVX2 variants: the CPU has AVX2 and they have not been turned off.
bool avx2_enabled();

// Process-wide switch, on by default; turning it on has no effect on a CPU without AVX2. It is read
// at the start of each vector loop, so flip it only while no kernel is running. Results never depend
// on it: every variant computes the same bits.
void set_avx2_enabled(bool enabled);

}  // namespace pyprune::simd
