// Structured gather against a reference that walks every output multi-index: any set of gathered
// axes, repeated and unordered indices, empty index lists, every element size and 1-3 threads.
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "pyprune/gather.hpp"
#include "support.hpp"

using namespace support;
using pyprune::AxisIndex;

namespace {

std::vector<unsigned char> gather_reference(const std::vector<unsigned char>& src, std::size_t itemsize,
                                            const std::vector<std::int64_t>& shape,
                                            const std::vector<std::vector<std::int64_t>>& index,
                                            const std::vector<bool>& all) {
  const std::size_t nd = shape.size();
  std::vector<std::size_t> out_dim(nd), stride(nd);
  std::size_t total = 1, s = 1;
  for (std::size_t a = nd; a-- > 0;) {
    stride[a] = s;
    s *= static_cast<std::size_t>(shape[a]);
    out_dim[a] = all[a] ? static_cast<std::size_t>(shape[a]) : index[a].size();
    total *= out_dim[a];
  }
  std::vector<unsigned char> out(total * itemsize);
  std::vector<std::size_t> idx(nd, 0);
  for (std::size_t o = 0; o < total; ++o) {
    std::size_t from = 0;
    for (std::size_t a = 0; a < nd; ++a)
      from += (all[a] ? idx[a] : static_cast<std::size_t>(index[a][idx[a]])) * stride[a];
    std::memcpy(out.data() + o * itemsize, src.data() + from * itemsize, itemsize);
    for (std::size_t a = nd; a-- > 0;)
      if (++idx[a] < out_dim[a]) break;
      else idx[a] = 0;
  }
  return out;
}

}  // namespace

TEST(gather_matches_reference) {
  const std::vector<std::vector<std::int64_t>> shapes = {
      {1}, {9}, {4097}, {3, 7}, {8, 1}, {1, 33}, {5, 4, 3}, {2, 3, 4, 5}, {3, 0, 2}, {400, 300}, {2, 3000, 17}};
  std::mt19937_64 rng(7);
  for (std::size_t itemsize : {1, 2, 4, 8, 16})
    for (const auto& shape : shapes) {
      const std::size_t nd = shape.size();
      std::size_t n = 1;
      for (auto d : shape) n *= static_cast<std::size_t>(d);
      std::vector<unsigned char> src(n * itemsize);
      for (auto& b : src) b = static_cast<unsigned char>(rng());
      // Every subset of gathered axes, each with a few index lists.
      for (unsigned subset = 0; subset < (1u << nd); ++subset)
        for (int variant = 0; variant < 4; ++variant) {
          std::vector<bool> all(nd);
          std::vector<std::vector<std::int64_t>> index(nd);
          for (std::size_t a = 0; a < nd; ++a) {
            all[a] = !(subset >> a & 1u);
            if (all[a] || shape[a] == 0) continue;
            const std::int64_t d = shape[a];
            switch (variant) {
              case 0:  // every other one
                for (std::int64_t i = 0; i < d; i += 2) index[a].push_back(i);
                break;
              case 1:  // reversed, with repeats
                for (std::int64_t i = d; i-- > 0;) {
                  index[a].push_back(i);
                  if (i % 3 == 0) index[a].push_back(i);
                }
                break;
              case 2:  // none kept
                break;
              default:  // random
                for (std::int64_t i = 0; i < d / 2 + 1; ++i) index[a].push_back(static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(d)));
            }
          }
          std::vector<AxisIndex> ix(nd);
          for (std::size_t a = 0; a < nd; ++a) ix[a] = all[a] ? AxisIndex{} : AxisIndex{false, index[a].data(), index[a].size()};
          const auto want = gather_reference(src, itemsize, shape, index, all);
          for (int threads : kThreads) {
            CONTEXT("itemsize=", itemsize, " shape=", shape_text(shape), " gathered axes=", subset, " variant=", variant,
                    " threads=", threads);
            std::vector<unsigned char> out(want.size() + 3, 0xAB);  // guard bytes past the end
            pyprune::gather(src.data(), itemsize, shape, ix, out.data(), threads);
            CHECK(out[want.size()] == 0xAB && out[want.size() + 2] == 0xAB);
            out.resize(want.size());
            CHECK_SEQ_EQ(out, want);
          }
        }
    }
}

TEST(error_gather_index_count) {
  const std::vector<float> src(6);
  std::vector<float> dst(6);
  CHECK_THROWS(pyprune::gather(src.data(), 4, {2, 3}, {AxisIndex{}}, dst.data(), 1), std::invalid_argument,
               "one index entry per axis is needed");
}

TEST(error_gather_index_out_of_range) {
  const std::vector<float> src(6);
  std::vector<float> dst(6);
  const std::int64_t high[] = {0, 3}, low[] = {-1};
  CHECK_THROWS(pyprune::gather(src.data(), 4, {2, 3}, {AxisIndex{}, AxisIndex{false, high, 2}}, dst.data(), 1),
               std::invalid_argument, "index 3 is out of range for axis 1 of size 3");
  CHECK_THROWS(pyprune::gather(src.data(), 4, {2, 3}, {AxisIndex{false, low, 1}, AxisIndex{}}, dst.data(), 1),
               std::invalid_argument, "index -1 is out of range for axis 0 of size 2");
}

TEST(error_gather_element_size) {
  const std::vector<unsigned char> src(18);
  std::vector<unsigned char> dst(18);
  CHECK_THROWS(pyprune::gather(src.data(), 3, {2, 3}, {AxisIndex{}, AxisIndex{}}, dst.data(), 1),
               std::invalid_argument, "unsupported element size 3");
}
