#pragma once
#include <pybind11/pybind11.h>

namespace pyprune::bindings {
void register_parallel(pybind11::module_& m);
void register_scores(pybind11::module_& m);
void register_select(pybind11::module_& m);
void register_masks(pybind11::module_& m);
void register_gather(pybind11::module_& m);
void register_lstsq(pybind11::module_& m);
}  // namespace pyprune::bindings
