#include "arrays.hpp"
#include "bindings.hpp"
#include "pyprune/lstsq.hpp"

namespace pyprune::bindings {

namespace {

// A float64 accumulator the kernel adds into in place: never a converted copy.
double* accumulator(py::array& a, py::ssize_t rows, py::ssize_t cols, const char* name) {
  if (a.dtype().kind() != 'f' || a.dtype().itemsize() != 8 || a.ndim() != 2 || a.shape(0) != rows ||
      a.shape(1) != cols || !(a.flags() & py::array::c_style) || !a.writeable())
    throw py::value_error(std::string(name) + " must be a writeable C-contiguous float64 array of shape (" +
                          std::to_string(rows) + ", " + std::to_string(cols) + ")");
  return static_cast<double*>(a.mutable_data());
}

}  // namespace

void register_lstsq(py::module_& m) {
  m.def("gram_accumulate", [](const py::array& x, const py::object& y, py::array& g, py::object& c, int threads) {
    const Tensor tx = tensor_of(x, "x");
    if (tx.ndim() != 2) throw py::value_error("x must be 2-D (rows, features)");
    const auto p = static_cast<py::ssize_t>(tx.shape[1]);
    double* gp = accumulator(g, p, p, "g");
    py::array ya;
    Tensor ty;
    double* cp = nullptr;
    const bool has_y = !y.is_none();
    if (has_y) {
      ya = y.cast<py::array>();
      ty = tensor_of(ya, "y");
      if (ty.ndim() != 2) throw py::value_error("y must be 2-D (rows, targets)");
      if (ty.shape[0] != tx.shape[0]) throw py::value_error("x and y must have the same number of rows");
      py::array ca = c.cast<py::array>();
      cp = accumulator(ca, p, static_cast<py::ssize_t>(ty.shape[1]), "c");
    }
    {
      py::gil_scoped_release release;
      gram_accumulate(tx, has_y ? &ty : nullptr, gp, cp, threads);
    }
  }, py::arg("x"), py::arg("y"), py::arg("g"), py::arg("c"), py::arg("threads"));
}

}  // namespace pyprune::bindings
