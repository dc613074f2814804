#include "arrays.hpp"
#include "bindings.hpp"
#include "pyprune/masks.hpp"

namespace pyprune::bindings {

namespace {

void* output_of(const Tensor& t, py::array& out) {
  if (out.dtype().kind() != 'f' || static_cast<std::size_t>(out.itemsize()) != dtype_size(t.dtype) ||
      shape_of(out) != t.shape)
    throw py::value_error("out must match w in shape and dtype");
  require_contiguous(out, "out");
  if (!out.writeable()) throw py::value_error("out is not writeable");
  return out.mutable_data();
}

}  // namespace

void register_masks(py::module_& m) {
  m.def("apply_mask", [](const py::array& w, const py::array& mask, py::array out, int threads) {
    const Tensor t = tensor_of(w, "w");
    if (shape_of(mask) != t.shape) throw py::value_error("mask and w have different shapes");
    const std::uint8_t* keep = bool_data(mask, "mask");
    void* dst = output_of(t, out);
    py::gil_scoped_release release;
    apply_mask(t, keep, dst, threads);
  }, py::arg("w"), py::arg("mask"), py::arg("out"), py::arg("threads"));

  m.def("apply_threshold", [](const py::array& w, double threshold, bool inclusive, py::array out, int threads) {
    const Tensor t = tensor_of(w, "w");
    void* dst = output_of(t, out);
    py::gil_scoped_release release;
    apply_threshold(t, threshold, inclusive, dst, threads);
  }, py::arg("w"), py::arg("threshold"), py::arg("inclusive"), py::arg("out"), py::arg("threads"));

  m.def("count_nonzero", [](const py::array& w, int threads) {
    const Tensor t = tensor_of(w, "w");
    py::gil_scoped_release release;
    return count_nonzero(t, threads);
  }, py::arg("w"), py::arg("threads"));

  m.def("keep_indices", [](const py::array& mask) {
    const std::uint8_t* data = bool_data(mask, "slice_mask");
    if (mask.ndim() != 1) throw py::value_error("slice_mask must be 1-D");
    std::vector<std::int64_t> idx;
    {
      py::gil_scoped_release release;
      idx = keep_indices(data, static_cast<std::size_t>(mask.shape(0)));
    }
    return to_numpy(idx);
  }, py::arg("slice_mask"));
}

}  // namespace pyprune::bindings
