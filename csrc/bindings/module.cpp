// Wiring only: each area registers its functions in its own bind_<area>.cpp.
#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyprune's C++ pruning core (private; use pyprune.core)";
  pyprune::bindings::register_parallel(m);
  pyprune::bindings::register_scores(m);
  pyprune::bindings::register_select(m);
  pyprune::bindings::register_masks(m);
  pyprune::bindings::register_gather(m);
  pyprune::bindings::register_lstsq(m);
}
