#include <pybind11/stl.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "pyprune/gather.hpp"

namespace pyprune::bindings {

void register_gather(py::module_& m) {
  using Index = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
  m.def("gather", [](const py::array& w, const std::vector<std::optional<Index>>& kept, int threads) {
    require_contiguous(w, "w");
    if (w.dtype().kind() == 'O') throw py::type_error("w has an object dtype");
    const auto shape = shape_of(w);
    if (kept.size() != shape.size()) throw py::value_error("kept needs one entry (None = whole axis) per axis of w");
    std::vector<AxisIndex> index(shape.size());
    std::vector<py::ssize_t> out_shape;
    for (std::size_t a = 0; a < shape.size(); ++a) {
      if (kept[a]) {
        const Index& ix = *kept[a];
        if (ix.ndim() != 1) throw py::value_error("indices for axis " + std::to_string(a) + " must be 1-D");
        index[a] = AxisIndex{false, ix.data(), static_cast<std::size_t>(ix.shape(0))};
        out_shape.push_back(ix.shape(0));
      } else {
        out_shape.push_back(static_cast<py::ssize_t>(shape[a]));
      }
    }
    py::array out(w.dtype(), out_shape);
    const void* src = w.data();
    void* dst = out.mutable_data();
    const auto itemsize = static_cast<std::size_t>(w.itemsize());
    {
      py::gil_scoped_release release;
      gather(src, itemsize, shape, index, dst, threads);
    }
    return out;
  }, py::arg("w"), py::arg("kept"), py::arg("threads"));
}

}  // namespace pyprune::bindings
