// parallel_for and the thread-count settings: every index runs exactly once in contiguous chunks,
// a worker's exception reaches the caller after the join, and bad thread counts are errors.
#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "check.hpp"
#include "pyprune/masks.hpp"
#include "pyprune/parallel.hpp"
#include "support.hpp"

using namespace support;

TEST(parallel_for_covers_every_index_once) {
  for (std::size_t n : {0, 1, 2, 3, 7, 8, 9, 33, 1000, 4097, 100003})
    for (int threads : {1, 2, 3, 8})
      for (std::size_t min_chunk : {1, 7, 1000, 1 << 15}) {
        CONTEXT("n=", n, " threads=", threads, " min_chunk=", min_chunk);
        std::vector<std::atomic<int>> hits(n);
        std::atomic<int> calls{0};
        std::atomic<bool> empty_chunk{false};
        pyprune::parallel_for(n, threads, [&](std::size_t b, std::size_t e) {
          ++calls;
          if (b >= e || e > n) empty_chunk = true;
          for (std::size_t i = b; i < e && i < n; ++i) ++hits[i];
        }, min_chunk);
        bool once = true;
        for (auto& h : hits) once &= h.load() == 1;
        CHECK(once);
        CHECK(!empty_chunk.load());
        CHECK(calls.load() <= threads);
        if (n == 0) CHECK_EQ(calls.load(), 0);
        // Chunks are no smaller than min_chunk unless there is only one.
        if (n >= 2 * min_chunk && threads > 1) CHECK(calls.load() > 1);
        if (n < 2 * min_chunk) CHECK(calls.load() <= 1);
      }
}

TEST(parallel_for_rethrows_a_worker_exception_after_the_join) {
  for (int threads : {2, 3}) {
    CONTEXT("threads=", threads);
    std::atomic<int> finished{0};
    // Only the last chunk (a worker thread) throws; the others still run to completion.
    CHECK_THROWS(pyprune::parallel_for(300, threads, [&](std::size_t, std::size_t e) {
      if (e == 300) throw std::out_of_range("last chunk failed");
      ++finished;
    }, 1), std::out_of_range, "last chunk failed");
    CHECK_EQ(finished.load(), threads - 1);
    // When every chunk throws, exactly one exception comes out.
    CHECK_THROWS(pyprune::parallel_for(300, threads, [&](std::size_t, std::size_t) {
      throw std::runtime_error("every chunk failed");
    }, 1), std::runtime_error, "every chunk failed");
  }
}

TEST(default_threads_setting) {
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  pyprune::set_default_threads(3);
  CHECK_EQ(pyprune::default_threads(), 3);
  CHECK_EQ(pyprune::resolve_threads(0), 3);
  CHECK_EQ(pyprune::resolve_threads(2), 2);
  pyprune::set_default_threads(0);
  CHECK_EQ(pyprune::default_threads(), hardware);
  CHECK_EQ(pyprune::resolve_threads(0), hardware);
}

TEST(error_set_default_threads_negative) {
  CHECK_THROWS(pyprune::set_default_threads(-1), std::invalid_argument, "threads must be >= 0 (0 means all cores)");
  CHECK_EQ(pyprune::default_threads(), static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

TEST(error_resolve_threads_negative) {
  CHECK_THROWS(pyprune::resolve_threads(-2), std::invalid_argument, "threads must be >= 0 (0 means the module default)");
  // Kernels pass their thread count through, so a negative one is the same error.
  const Array w = make(DType::f32, {5}, Dist::normal, 1);
  CHECK_THROWS(pyprune::count_nonzero(w.view(), -1), std::invalid_argument,
               "threads must be >= 0 (0 means the module default)");
}
