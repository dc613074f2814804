#include <pybind11/stl.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "pyprune/select.hpp"

namespace pyprune::bindings {

namespace {

std::vector<Tensor> tensors_of(const std::vector<py::array>& arrays, const std::string& name) {
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < arrays.size(); ++i) out.push_back(tensor_of(arrays[i], name + "[" + std::to_string(i) + "]"));
  return out;
}

}  // namespace

void register_select(py::module_& m) {
  m.def("global_select", [](const std::vector<py::array>& scores, std::uint64_t k, bool magnitude, bool allow,
                            int threads) {
    const auto ts = tensors_of(scores, "scores_list");
    GlobalSelection sel;
    {
      py::gil_scoped_release release;
      sel = global_select(ts, k, magnitude, allow, threads);
    }
    return py::make_tuple(sel.threshold, sel.counts, sel.ties);
  }, py::arg("scores"), py::arg("k"), py::arg("magnitude"), py::arg("allow_nonfinite"), py::arg("threads"),
        "(threshold, counts, ties) of the k lowest across the arrays.");

  m.def("global_masks", [](const std::vector<py::array>& scores, std::uint64_t k, bool allow, int threads) {
    const auto ts = tensors_of(scores, "scores_list");
    py::list masks;
    std::vector<std::uint8_t*> keep;
    for (const auto& t : ts) {
      py::array mk = new_bool_array(t.shape);
      keep.push_back(static_cast<std::uint8_t*>(mk.mutable_data()));
      masks.append(mk);
    }
    {
      py::gil_scoped_release release;
      global_masks(ts, k, allow, threads, keep);
    }
    return masks;
  }, py::arg("scores"), py::arg("k"), py::arg("allow_nonfinite"), py::arg("threads"));

  m.def("prune_global", [](std::vector<py::array> weights, const std::optional<std::vector<py::array>>& scores,
                           std::uint64_t k, bool allow, int threads) {
    std::vector<MutableTensor> ws;
    for (std::size_t i = 0; i < weights.size(); ++i)
      ws.push_back(mutable_tensor_of(weights[i], "weights_list[" + std::to_string(i) + "]"));
    std::vector<Tensor> ss;
    if (scores) ss = tensors_of(*scores, "scores");
    std::vector<std::int64_t> counts;
    {
      py::gil_scoped_release release;
      counts = prune_global(ws, ss, k, allow, threads);
    }
    return counts;
  }, py::arg("weights"), py::arg("scores"), py::arg("k"), py::arg("allow_nonfinite"), py::arg("threads"));

  m.def("lowest_slices", [](const py::array& scores, std::size_t k, bool allow) {
    const Tensor t = tensor_of(scores, "scores");
    std::vector<std::int64_t> idx;
    {
      py::gil_scoped_release release;
      idx = lowest_slices(t, k, allow);
    }
    return to_numpy(idx);
  }, py::arg("scores"), py::arg("k"), py::arg("allow_nonfinite"));

  m.def("nm_mask", [](const py::array& w, int n, int m_, int axis, bool magnitude, bool allow, int threads) {
    const Tensor t = tensor_of(w, "w");
    py::array keep = new_bool_array(t.shape);
    auto* k = static_cast<std::uint8_t*>(keep.mutable_data());
    {
      py::gil_scoped_release release;
      nm_mask(t, n, m_, axis, magnitude, allow, threads, k);
    }
    return keep;
  }, py::arg("w"), py::arg("n"), py::arg("m"), py::arg("axis"), py::arg("magnitude"), py::arg("allow_nonfinite"),
        py::arg("threads"));
}

}  // namespace pyprune::bindings
