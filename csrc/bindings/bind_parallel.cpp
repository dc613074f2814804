#include "bindings.hpp"
#include "pyprune/parallel.hpp"

namespace py = pybind11;

namespace pyprune::bindings {
void register_parallel(py::module_& m) {
  m.def("get_num_threads", &default_threads, "Threads a kernel uses when called with threads=0.");
  m.def("set_num_threads", &set_default_threads, py::arg("threads"),
        "Set the module-wide thread count (0 = all cores).");
}
}  // namespace pyprune::bindings
