// Native benchmark of the pruning kernels (no Python): times each kernel on 64M float32 elements
// next to a memcpy of the same bytes. Build with -DPYPRUNE_BUILD_BENCH=ON; run `pyprune_bench [M] [threads]`
// where M is the element count in millions (default 64) and threads 0 = all cores.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "pyprune/gather.hpp"
#include "pyprune/masks.hpp"
#include "pyprune/parallel.hpp"
#include "pyprune/scores.hpp"
#include "pyprune/select.hpp"

using namespace pyprune;

namespace {

double best_ms(const std::function<void()>& fn, int repeat, const std::function<void()>& setup = {}) {
  double best = 1e300;
  for (int r = 0; r < repeat; ++r) {
    if (setup) setup();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return best;
}

void row(const char* name, double ms, double floor_ms) {
  std::printf("%-40s %10.1f %10.1f %8.2fx\n", name, ms, floor_ms, ms / floor_ms);
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t millions = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 64;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 0;
  const int repeat = 5;
  const std::size_t side = static_cast<std::size_t>(std::sqrt(static_cast<double>(millions) * (1 << 20)));
  const std::size_t n = side * side;
  std::mt19937_64 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float> w(n), copy(n);
  for (auto& x : w) x = normal(rng);
  std::printf("pyprune native benchmark: %zu float32 elements (%zux%zu), %d threads\n", n, side, side,
              resolve_threads(threads));
  std::printf("%-40s %10s %10s %9s\n", "kernel", "ms", "memcpy ms", "x memcpy");
  const double floor_ms = best_ms([&] { std::memcpy(copy.data(), w.data(), n * sizeof(float)); }, repeat);
  row("memcpy", floor_ms, floor_ms);

  // 50 tensors of mixed sizes totalling n.
  std::vector<std::size_t> sizes(50);
  std::uniform_real_distribution<double> u(0.0, std::log(1000.0));
  std::vector<double> raw(50);
  for (auto& r : raw) r = std::exp(u(rng));
  const double sum = std::accumulate(raw.begin(), raw.end(), 0.0);
  std::size_t used = 0;
  for (int i = 0; i < 50; ++i) used += sizes[i] = std::max<std::size_t>(1, static_cast<std::size_t>(raw[i] / sum * n));
  sizes[49] += n - used;
  std::vector<MutableTensor> weights;
  std::vector<Tensor> views;
  for (std::size_t i = 0, off = 0; i < 50; off += sizes[i], ++i) {
    weights.push_back(MutableTensor{copy.data() + off, DType::f32, {static_cast<std::int64_t>(sizes[i])}});
    views.push_back(weights.back().view());
  }
  auto reset = [&] { std::memcpy(copy.data(), w.data(), n * sizeof(float)); };
  row("global select k=50% (50 tensors)", best_ms([&] { global_select(views, n / 2, true, false, threads); }, repeat, reset), floor_ms);
  row("global prune 50% in place (50 tensors)", best_ms([&] { prune_global(weights, {}, n / 2, false, threads); }, repeat, reset), floor_ms);

  const Tensor mat{w.data(), DType::f32, {static_cast<std::int64_t>(side), static_cast<std::int64_t>(side)}};
  std::vector<std::uint8_t> keep(n);
  row("2:4 mask, last axis", best_ms([&] { nm_mask(mat, 2, 4, 1, true, false, threads, keep.data()); }, repeat), floor_ms);
  row("2:4 mask, axis 0", best_ms([&] { nm_mask(mat, 2, 4, 0, true, false, threads, keep.data()); }, repeat), floor_ms);
  std::vector<double> norms(side);
  for (int axis = 0; axis < 2; ++axis) {
    const std::string l1 = std::string("L1 per ") + (axis == 0 ? "row" : "column");
    const std::string l2 = std::string("L2 per ") + (axis == 0 ? "row" : "column");
    row(l1.c_str(), best_ms([&] { slice_norms(mat, {axis}, Norm::l1, false, threads, norms.data()); }, repeat), floor_ms);
    row(l2.c_str(), best_ms([&] { slice_norms(mat, {axis}, Norm::l2, false, threads, norms.data()); }, repeat), floor_ms);
  }
  row("element scores |w|", best_ms([&] { element_scores(mat, copy.data(), false, false, threads); }, repeat), floor_ms);
  row("apply threshold", best_ms([&] { apply_threshold(mat, 0.5, false, copy.data(), threads); }, repeat), floor_ms);
  row("count non-zeros", best_ms([&] { count_nonzero(mat, threads); }, repeat), floor_ms);

  std::vector<std::int64_t> half_idx;
  for (std::size_t i = 0; i < side; i += 2) half_idx.push_back(static_cast<std::int64_t>(i));
  const AxisIndex ix{false, half_idx.data(), half_idx.size()};
  const std::size_t out_n = half_idx.size() * half_idx.size();
  const double out_floor = best_ms([&] { std::memcpy(copy.data(), w.data(), out_n * sizeof(float)); }, repeat);
  row("gather every other row + column", best_ms([&] {
        gather(w.data(), 4, {static_cast<std::int64_t>(side), static_cast<std::int64_t>(side)}, {ix, ix}, copy.data(), threads);
      }, repeat), out_floor);
  return 0;
}
