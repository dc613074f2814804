// Wiring only: each area registers its functions in its own bind_<area>.cpp.
#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyprune's C++ pruning core (private; use pyprune.core)";
  pyprune::bindings::register_parallel(m);
}
