// Thread-count setting and a parallel-for that carries worker exceptions back to the caller.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace pyprune {

// Module-wide default used when a kernel is called with threads == 0.
int default_threads();
void set_default_threads(int threads);  // 0 restores "all cores"
int resolve_threads(int threads);       // 0 -> default, otherwise threads (>= 1)

// Runs fn(begin, end) over [0, n) split into contiguous chunks, one per thread.
// The first exception thrown by any worker is rethrown in the caller after all threads joined,
// so a bad input becomes an ordinary C++ exception (and a Python exception through the bindings).
template <class Fn>
void parallel_for(std::size_t n, int threads, Fn&& fn, std::size_t min_chunk = 1 << 15) {
  if (n == 0) return;
  std::size_t t = static_cast<std::size_t>(resolve_threads(threads));
  t = std::min(t, std::max<std::size_t>(1, n / std::max<std::size_t>(1, min_chunk)));
  if (t <= 1) {
    fn(std::size_t{0}, n);
    return;
  }
  std::exception_ptr first_error;
  std::mutex error_mutex;
  std::vector<std::thread> workers;
  workers.reserve(t - 1);
  const std::size_t chunk = (n + t - 1) / t;
  auto run = [&](std::size_t begin, std::size_t end) {
    try {
      fn(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
    }
  };
  for (std::size_t i = 1; i < t; ++i) {
    std::size_t begin = i * chunk, end = std::min(n, begin + chunk);
    if (begin >= end) break;
    workers.emplace_back(run, begin, end);
  }
  run(0, std::min(n, chunk));
  for (auto& w : workers) w.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace pyprune
