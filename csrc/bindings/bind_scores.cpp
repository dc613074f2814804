#include "arrays.hpp"
#include "bindings.hpp"
#include "pyprune/scores.hpp"

namespace pyprune::bindings {

namespace {

Norm norm_of(const std::string& ord) {
  if (ord == "l1") return Norm::l1;
  if (ord == "l2") return Norm::l2;
  if (ord == "linf") return Norm::linf;
  if (ord == "mean") return Norm::mean;
  throw py::value_error("ord must be 'l1', 'l2', 'linf' or 'mean', got '" + ord + "'");
}

}  // namespace

void register_scores(py::module_& m) {
  m.def("element_scores", [](const py::array& w, bool square, bool allow, int threads) {
    const Tensor t = tensor_of(w, "w");
    py::array_t<float> out(std::vector<py::ssize_t>(t.shape.begin(), t.shape.end()));
    float* o = out.mutable_data();
    {
      py::gil_scoped_release release;
      element_scores(t, o, square, allow, threads);
    }
    return out;
  }, py::arg("w"), py::arg("square"), py::arg("allow_nonfinite"), py::arg("threads"));

  m.def("slice_norms", [](const py::array& w, const std::vector<int>& axes, const std::string& ord, bool allow,
                          int threads) {
    const Tensor t = tensor_of(w, "w");
    const Norm norm = norm_of(ord);
    std::vector<py::ssize_t> shape;
    for (int a : axes) {
      if (a < 0 || a >= t.ndim()) throw py::value_error("axis " + std::to_string(a) + " is out of range");
      shape.push_back(static_cast<py::ssize_t>(t.shape[a]));
    }
    py::array_t<double> out(shape);
    double* o = out.mutable_data();
    {
      py::gil_scoped_release release;
      slice_norms(t, axes, norm, allow, threads, o);
    }
    return out;
  }, py::arg("w"), py::arg("axes"), py::arg("ord"), py::arg("allow_nonfinite"), py::arg("threads"));

  m.def("wanda_scores", [](const py::array& w, const py::array_t<float, py::array::c_style | py::array::forcecast>& norms,
                           int axis, bool allow, int threads) {
    const Tensor t = tensor_of(w, "w");
    if (axis < 0 || axis >= t.ndim()) throw py::value_error("axis " + std::to_string(axis) + " is out of range");
    if (norms.ndim() != 1 || norms.shape(0) != t.shape[axis])
      throw py::value_error("input_norms must have w.shape[axis] = " + std::to_string(t.shape[axis]) + " entries");
    py::array_t<float> out(std::vector<py::ssize_t>(t.shape.begin(), t.shape.end()));
    float* o = out.mutable_data();
    const float* nrm = norms.data();
    {
      py::gil_scoped_release release;
      wanda_scores(t, nrm, axis, allow, threads, o);
    }
    return out;
  }, py::arg("w"), py::arg("input_norms"), py::arg("axis"), py::arg("allow_nonfinite"), py::arg("threads"));

  m.def("fpgm_scores", [](const py::array& w, int axis, bool allow, int threads) {
    const Tensor t = tensor_of(w, "w");
    if (axis < 0 || axis >= t.ndim()) throw py::value_error("axis " + std::to_string(axis) + " is out of range");
    py::array_t<double> out(static_cast<py::ssize_t>(t.shape[axis]));
    double* o = out.mutable_data();
    {
      py::gil_scoped_release release;
      fpgm_scores(t, axis, allow, threads, o);
    }
    return out;
  }, py::arg("w"), py::arg("axis"), py::arg("allow_nonfinite"), py::arg("threads"));

  m.def("random_scores", [](std::size_t n, std::uint64_t seed, int threads) {
    py::array_t<float> out(static_cast<py::ssize_t>(n));
    float* o = out.mutable_data();
    {
      py::gil_scoped_release release;
      random_scores(n, seed, threads, o);
    }
    return out;
  }, py::arg("n"), py::arg("seed"), py::arg("threads"));
}

}  // namespace pyprune::bindings
