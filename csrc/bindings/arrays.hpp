// numpy array <-> kernel view conversions shared by the bind_<area>.cpp files.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "pyprune/tensor.hpp"

namespace pyprune::bindings {

namespace py = pybind11;

inline DType float_dtype(const py::array& a, const std::string& name) {
  const py::dtype dt = a.dtype();
  if (dt.kind() == 'f') {
    switch (dt.itemsize()) {
      case 2: return DType::f16;
      case 4: return DType::f32;
      case 8: return DType::f64;
    }
  }
  throw py::type_error(name + " has unsupported dtype " + std::string(py::str(dt)) +
                       "; expected float16, float32 or float64");
}

inline std::vector<std::int64_t> shape_of(const py::array& a) {
  return std::vector<std::int64_t>(a.shape(), a.shape() + a.ndim());
}

inline void require_contiguous(const py::array& a, const std::string& name) {
  if (!(a.flags() & py::array::c_style)) throw py::value_error(name + " must be C-contiguous");
}

// Zero-copy view of a C-contiguous float array.
inline Tensor tensor_of(const py::array& a, const std::string& name) {
  const DType dt = float_dtype(a, name);
  require_contiguous(a, name);
  return Tensor{a.data(), dt, shape_of(a)};
}

inline MutableTensor mutable_tensor_of(py::array& a, const std::string& name) {
  const DType dt = float_dtype(a, name);
  require_contiguous(a, name);
  if (!a.writeable()) throw py::value_error(name + " is not writeable");
  return MutableTensor{a.mutable_data(), dt, shape_of(a)};
}

inline const std::uint8_t* bool_data(const py::array& a, const std::string& name) {
  if (a.dtype().kind() != 'b') throw py::type_error(name + " must be a bool array");
  require_contiguous(a, name);
  return static_cast<const std::uint8_t*>(a.data());
}

inline py::array new_bool_array(const std::vector<std::int64_t>& shape) {
  return py::array(py::dtype("bool"), std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

template <class T>
py::array_t<T> to_numpy(const std::vector<T>& v) {
  py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

}  // namespace pyprune::bindings
