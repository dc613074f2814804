#include "pyprune/parallel.hpp"

#include <atomic>
#include <stdexcept>

namespace pyprune {

namespace {
std::atomic<int> g_default_threads{0};

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}
}  // namespace

int default_threads() {
  int t = g_default_threads.load();
  return t > 0 ? t : hardware_threads();
}

void set_default_threads(int threads) {
  if (threads < 0) throw std::invalid_argument("threads must be >= 0 (0 means all cores)");
  g_default_threads.store(threads);
}

int resolve_threads(int threads) {
  if (threads < 0) throw std::invalid_argument("threads must be >= 0 (0 means the module default)");
  return threads == 0 ? default_threads() : threads;
}

}  // namespace pyprune
