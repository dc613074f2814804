#pragma once
#include <pybind11/pybind11.h>

namespace pyprune::bindings {
void register_parallel(pybind11::module_& m);
}  // namespace pyprune::bindings
