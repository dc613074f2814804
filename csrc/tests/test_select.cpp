// Global selection against a scalar reference: the k lowest across a list (threshold, counts, ties),
// the keep masks and in-place pruning built on it, and lowest slices. The float32 vector loops
// (bracket counting of the sampled selection, the zeroing pass of prune_global) run with AVX2 and
// with the SSE2 baseline; sizes and misalignments put elements in every lane and tail position,
// thread counts put chunk boundaries inside vectors. N:M masks are in test_nm_mask.cpp.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "pyprune/select.hpp"
#include "pyprune/simd.hpp"
#include "support.hpp"

using namespace support;
using pyprune::MutableTensor;
using pyprune::Tensor;

namespace {

const std::string kNonfiniteScores =
    "scores contains NaN or Inf; pass nan='max' to treat them as most important";

// ---------------------------------------------------------------------------------------------
// Reference global selection: a stable sort of every element by rank keeps equal ranks in
// list-then-flat order, so the first k of the order are exactly the documented selection.

struct Selection {
  double threshold = 0;
  std::vector<std::int64_t> counts, ties;
  std::vector<std::vector<std::uint8_t>> selected;  // per tensor, 1 where selected
};

class Ranking {
 public:
  Ranking(const std::vector<const Array*>& list, bool magnitude) : sizes_(list.size()) {
    for (std::size_t t = 0; t < list.size(); ++t) {
      sizes_[t] = list[t]->size();
      for (std::size_t i = 0; i < list[t]->size(); ++i) items_.push_back({rank_of(list[t]->get(i), magnitude), t, i});
    }
    // Items were pushed in list-then-flat order, so a stable sort by rank alone is the selection order.
    std::stable_sort(items_.begin(), items_.end(), [](const Item& a, const Item& b) { return a.rank < b.rank; });
  }

  Selection select(std::uint64_t k) const {
    Selection s;
    s.counts.assign(sizes_.size(), 0);
    s.ties.assign(sizes_.size(), 0);
    for (auto n : sizes_) s.selected.emplace_back(n, 0);
    if (k == 0) {
      s.threshold = -kInf;
      return s;
    }
    const Rank last = items_[k - 1].rank;
    s.threshold = last.nonfinite ? kInf : last.v;
    for (std::size_t j = 0; j < k; ++j) {
      const Item& it = items_[j];
      ++s.counts[it.tensor];
      s.selected[it.tensor][it.index] = 1;
      if (it.rank == last) ++s.ties[it.tensor];
    }
    return s;
  }

 private:
  struct Item {
    Rank rank;
    std::size_t tensor, index;
  };
  std::vector<std::size_t> sizes_;
  std::vector<Item> items_;
};

std::vector<Tensor> views_of(const std::vector<const Array*>& list) {
  std::vector<Tensor> out;
  for (const Array* a : list) out.push_back(a->view());
  return out;
}

// The k values worth checking for n elements: none, one, a third, half, all but one, all.
std::vector<std::uint64_t> ks_for(std::size_t n) {
  std::vector<std::uint64_t> ks = {0, 1, n / 3, n / 2, n ? n - 1 : 0, n};
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  while (!ks.empty() && ks.back() > n) ks.pop_back();
  return ks;
}

// The reference answers at one k, shared by every SIMD variant and thread count.
struct Expected {
  Selection by_value, by_magnitude;
};

void check_select(const std::vector<const Array*>& list, const Expected& want, std::uint64_t k, int threads) {
  for (bool magnitude : {false, true}) {
    CONTEXT("global_select magnitude=", magnitude);
    const Selection& w = magnitude ? want.by_magnitude : want.by_value;
    const auto got = pyprune::global_select(views_of(list), k, magnitude, true, threads);
    CHECK_EQ(got.threshold, w.threshold);
    CHECK_SEQ_EQ(got.counts, w.counts);
    CHECK_SEQ_EQ(got.ties, w.ties);
  }
}

void check_masks(const std::vector<const Array*>& list, const Selection& want, std::uint64_t k, int threads) {
  CONTEXT("global_masks");
  std::vector<std::vector<std::uint8_t>> keep;
  std::vector<std::uint8_t*> out;
  for (const Array* a : list) keep.emplace_back(a->size() + 1, 7);  // one guard byte past the end
  for (auto& kp : keep) out.push_back(kp.data());
  pyprune::global_masks(views_of(list), k, true, threads, out);
  for (std::size_t t = 0; t < list.size(); ++t) {
    CONTEXT("tensor ", t);
    std::vector<std::uint8_t> expected(want.selected[t].size());
    for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = want.selected[t][i] ? 0 : 1;
    CHECK_EQ(keep[t].back(), std::uint8_t{7});
    keep[t].pop_back();
    CHECK_SEQ_EQ(keep[t], expected);
  }
}

// prune_global on copies of `weights`: by |w| when scores is empty, else by the scores' values.
void check_prune(const std::vector<const Array*>& weights, const std::vector<const Array*>& scores,
                 const Selection& want, std::uint64_t k, int threads) {
  CONTEXT("prune_global by ", scores.empty() ? "|w|" : "scores");
  std::vector<Array> copies;
  for (const Array* w : weights) copies.push_back(*w);
  std::vector<MutableTensor> ws;
  for (auto& c : copies) ws.push_back(c.mut());
  const auto zeroed = pyprune::prune_global(ws, views_of(scores), k, true, threads);
  CHECK_SEQ_EQ(zeroed, want.counts);
  for (std::size_t t = 0; t < weights.size(); ++t) {
    CONTEXT("tensor ", t);
    std::vector<std::uint64_t> expected = weights[t]->all_bits();
    for (std::size_t i = 0; i < expected.size(); ++i)
      if (want.selected[t][i]) expected[i] = 0;
    CHECK_SEQ_EQ(copies[t].all_bits(), expected);
  }
}

// Every kernel built on the global selection, for one list, at every k and thread count. The list
// serves as its own scores when pruning by score, so selection by value zeroes it in place.
void check_all_selection_kernels(const std::vector<const Array*>& list, const std::vector<std::uint64_t>& ks,
                                 const std::vector<int>& threads_list) {
  const Ranking by_value(list, false), by_magnitude(list, true);
  for (std::uint64_t k : ks) {
    const Expected want{by_value.select(k), by_magnitude.select(k)};
    for_each_simd([&] {
      for (int threads : threads_list) {
        CONTEXT("threads=", threads, " k=", k);
        check_select(list, want, k, threads);
        check_masks(list, want.by_value, k, threads);
        check_prune(list, {}, want.by_magnitude, k, threads);
        check_prune(list, list, want.by_value, k, threads);
      }
    });
  }
}

}  // namespace

TEST(simd_switch) {
  pyprune::simd::set_avx2_enabled(false);
  CHECK(!pyprune::simd::avx2_enabled());
  pyprune::simd::set_avx2_enabled(true);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  CHECK_EQ(pyprune::simd::avx2_enabled(), static_cast<bool>(__builtin_cpu_supports("avx2")));
#else
  CHECK(!pyprune::simd::avx2_enabled());
#endif
}

TEST(global_selection_single_tensor_awkward_sizes) {
  for (DType dtype : kDTypes)
    for (std::size_t n : kSizes)
      for (std::size_t misalign : {0, 1, 3})
        for (Dist dist : {Dist::normal, Dist::ties, Dist::specials}) {
          CONTEXT(pyprune::dtype_name(dtype), " n=", n, " misalign=", misalign, " ", dist_name(dist));
          const Array a = make(dtype, {static_cast<std::int64_t>(n)}, dist, n * 31 + misalign);
          check_all_selection_kernels({&a}, ks_for(n), kThreads);
        }
}

TEST(global_selection_tensor_lists) {
  // Every awkward size in one list (empty tensors included), each at its own misalignment, as
  // float32 only (vector loops), mixed with float16 (32-bit keys) and mixed with float64 (64-bit keys).
  const std::vector<std::vector<DType>> mixes = {
      {DType::f32}, {DType::f32, DType::f16}, {DType::f16, DType::f32, DType::f64}, {DType::f64}};
  for (std::size_t mix = 0; mix < mixes.size(); ++mix)
    for (Dist dist : {Dist::normal, Dist::ties, Dist::specials, Dist::constant}) {
      CONTEXT("mix=", mix, " ", dist_name(dist));
      std::vector<Array> arrays;
      for (std::size_t i = 0; i < kSizes.size(); ++i) {
        const DType dt = mixes[mix][i % mixes[mix].size()];
        const std::int64_t n = static_cast<std::int64_t>(kSizes[i]);
        // Some 2-D: selection follows flat order whatever the shape.
        std::vector<std::int64_t> shape = n % 3 == 0 && n ? std::vector<std::int64_t>{3, n / 3} : std::vector<std::int64_t>{n};
        arrays.push_back(make(dt, shape, dist, 1000 * mix + 10 * i + static_cast<int>(dist), i % 4));
      }
      std::vector<const Array*> list;
      for (const auto& a : arrays) list.push_back(&a);
      std::size_t total = 0;
      for (const auto& a : arrays) total += a.size();
      check_all_selection_kernels(list, ks_for(total), kThreads);
    }
}

TEST(global_selection_large_sampled_path) {
  // Past 2^20 elements the selection brackets the k-th key from a sample and counts through the
  // vector loop; ties and constants overflow the bracket and take the exact radix path instead.
  // Each case is one path: k below the sample range, inside it, near the end; NaN/Inf inside the
  // bracket; overflow to the radix path (32- and 64-bit keys); float64 keys on the sampled path.
  struct Case {
    DType big_dtype;
    Dist dist;
    std::vector<double> k_fractions;  // of the total; 1.0 = all, negative = total minus that many
  };
  const std::vector<Case> cases = {{DType::f32, Dist::normal, {1e-9, 1.0 / 3, -5}},
                                   {DType::f32, Dist::specials, {0.5, 0.97}},
                                   {DType::f32, Dist::ties, {1.0 / 3}},
                                   {DType::f32, Dist::constant, {0.004}},
                                   {DType::f64, Dist::normal, {0.5}},
                                   {DType::f64, Dist::ties, {0.6}}};
  const std::int64_t big = (std::int64_t{1} << 20) + 37;
  for (const Case& c : cases) {
    CONTEXT(pyprune::dtype_name(c.big_dtype), " ", dist_name(c.dist));
    std::vector<Array> arrays;
    arrays.push_back(make(DType::f32, {17}, c.dist, 1, 3));
    arrays.push_back(make(c.big_dtype, {big}, c.dist, 2, 1));
    arrays.push_back(make(DType::f16, {4097}, c.dist, 3, 1));
    arrays.push_back(make(DType::f32, {0}, c.dist, 4));
    arrays.push_back(make(DType::f32, {33, 31}, c.dist, 5, 2));
    std::vector<const Array*> list;
    for (const auto& a : arrays) list.push_back(&a);
    std::size_t total = 0;
    for (const auto& a : arrays) total += a.size();
    std::vector<std::uint64_t> ks;
    for (double f : c.k_fractions)
      ks.push_back(f < 0 ? total - static_cast<std::uint64_t>(-f)
                         : std::max<std::uint64_t>(1, static_cast<std::uint64_t>(f * static_cast<double>(total))));
    check_all_selection_kernels(list, ks, kThreads);
  }
}

TEST(global_selection_ties_take_list_then_flat_order) {
  // Documented example: the zeros (-0 included) tie; the first ones in list then flat order win.
  Array a(DType::f32, {5}), b(DType::f32, {3});
  const double av[] = {1.0, 0.0, -0.0, 0.0, 2.0}, bv[] = {-0.0, -3.0, 0.0};
  for (int i = 0; i < 5; ++i) a.set(i, av[i]);
  for (int i = 0; i < 3; ++i) b.set(i, bv[i]);
  for_each_simd([&] {
    const auto sel = pyprune::global_select({a.view(), b.view()}, 3, false, false, 1);
    CHECK_EQ(sel.threshold, 0.0);
    CHECK_SEQ_EQ(sel.counts, (std::vector<std::int64_t>{2, 1}));
    CHECK_SEQ_EQ(sel.ties, (std::vector<std::int64_t>{2, 0}));
    std::vector<std::uint8_t> ka(5), kb(3);
    pyprune::global_masks({a.view(), b.view()}, 3, false, 1, {ka.data(), kb.data()});
    CHECK_SEQ_EQ(ka, (std::vector<std::uint8_t>{1, 0, 0, 1, 1}));
    CHECK_SEQ_EQ(kb, (std::vector<std::uint8_t>{1, 0, 1}));
    // By magnitude all five zeros tie below 1: k=4 takes the three in a and the first in b.
    const auto mag = pyprune::global_select({a.view(), b.view()}, 4, true, false, 1);
    CHECK_EQ(mag.threshold, 0.0);
    CHECK_SEQ_EQ(mag.counts, (std::vector<std::int64_t>{3, 1}));
    CHECK_SEQ_EQ(mag.ties, (std::vector<std::int64_t>{3, 1}));
  });
}

TEST(global_selection_nonfinite_ranks_above_every_finite_value) {
  Array a(DType::f32, {9});
  const double v[] = {kNaN, 1e30, -kInf, 3.0, kInf, -1e30, -kNaN, 0.0, 2.0};
  for (int i = 0; i < 9; ++i) a.set(i, v[i]);
  for_each_simd([&] {
    // Five finite values first; the four non-finite ones tie above them, in flat order.
    const auto five = pyprune::global_select({a.view()}, 5, false, true, 1);
    CHECK_EQ(five.threshold, 1e30f);
    const auto six = pyprune::global_select({a.view()}, 6, false, true, 1);
    CHECK_EQ(six.threshold, kInf);
    CHECK_SEQ_EQ(six.ties, (std::vector<std::int64_t>{1}));
    std::vector<std::uint8_t> keep(9);
    pyprune::global_masks({a.view()}, 6, true, 1, {keep.data()});
    CHECK_SEQ_EQ(keep, (std::vector<std::uint8_t>{0, 0, 1, 0, 1, 0, 1, 0, 0}));
  });
}

TEST(global_selection_rejects_nonfinite_at_every_position) {
  // Each lane and tail position of the vector loops must notice a NaN/Inf.
  for_each_simd([&] {
    for (std::size_t n : kSizes) {
      if (n == 0) continue;
      std::vector<std::size_t> positions;
      for (std::size_t p = 0; p < n; ++p)
        if (n <= 33 || p < 9 || p + 9 > n || p == n / 2) positions.push_back(p);
      for (std::size_t p : positions)
        for (double bad : {kNaN, kInf, -kInf}) {
          CONTEXT("n=", n, " position=", p, " value=", bad);
          Array a = make(DType::f32, {static_cast<std::int64_t>(n)}, Dist::normal, n, 1);
          a.set(p, bad);
          for (std::uint64_t k : {std::uint64_t{0}, std::uint64_t{1}, static_cast<std::uint64_t>(n)}) {
            CHECK_THROWS(pyprune::global_select({a.view()}, k, true, false, 2), std::invalid_argument,
                         kNonfiniteScores);
            std::vector<std::uint8_t> keep(n);
            CHECK_THROWS(pyprune::global_masks({a.view()}, k, false, 2, {keep.data()}), std::invalid_argument,
                         kNonfiniteScores);
            Array w = a;
            CHECK_THROWS(pyprune::prune_global({w.mut()}, {}, k, false, 2), std::invalid_argument, kNonfiniteScores);
          }
        }
    }
    // The sampled path counts through the bracket loop; a bad value anywhere must still throw.
    const std::int64_t big = (std::int64_t{1} << 20) + 11;
    Array a = make(DType::f32, {big}, Dist::normal, 99, 1);
    for (std::int64_t p : {std::int64_t{0}, std::int64_t{5}, big / 2 + 3, big - 2, big - 1})
      for (int threads : kThreads) {
        CONTEXT("large position=", p, " threads=", threads);
        const std::uint64_t before = a.bits(static_cast<std::size_t>(p));
        a.set(static_cast<std::size_t>(p), kInf);
        CHECK_THROWS(pyprune::global_select({a.view()}, static_cast<std::uint64_t>(big / 2), false, false, threads),
                     std::invalid_argument, kNonfiniteScores);
        a.set_bits(static_cast<std::size_t>(p), before);
      }
  });
}

TEST(error_global_select_k_out_of_range) {
  const Array a = make(DType::f32, {4}, Dist::normal, 1), b = make(DType::f64, {3}, Dist::normal, 2);
  CHECK_THROWS(pyprune::global_select({a.view()}, 5, false, false, 1), std::invalid_argument,
               "k=5 is larger than the number of elements (4)");
  CHECK_THROWS(pyprune::global_select({a.view(), b.view()}, 8, true, false, 1), std::invalid_argument,
               "k=8 is larger than the number of elements (7)");
  const Array empty(DType::f32, {0});
  CHECK_THROWS(pyprune::global_select({empty.view()}, 1, false, false, 1), std::invalid_argument,
               "k=1 is larger than the number of elements (0)");
}

TEST(error_global_select_empty_list) {
  CHECK_THROWS(pyprune::global_select({}, 0, false, false, 1), std::invalid_argument, "the list of arrays is empty");
}

TEST(error_global_select_nonfinite) {
  Array a = make(DType::f16, {10}, Dist::normal, 1);
  a.set(4, kNaN);
  CHECK_THROWS(pyprune::global_select({a.view()}, 3, false, false, 1), std::invalid_argument, kNonfiniteScores);
}

TEST(error_global_masks_k_out_of_range) {
  const Array a = make(DType::f32, {4}, Dist::normal, 1);
  std::vector<std::uint8_t> keep(4);
  CHECK_THROWS(pyprune::global_masks({a.view()}, 5, false, 1, {keep.data()}), std::invalid_argument,
               "k=5 is larger than the number of elements (4)");
}

TEST(error_global_masks_empty_list) {
  CHECK_THROWS(pyprune::global_masks({}, 0, false, 1, {}), std::invalid_argument, "the list of arrays is empty");
}

TEST(error_prune_global_k_out_of_range) {
  Array w = make(DType::f32, {2, 3}, Dist::normal, 1);
  CHECK_THROWS(pyprune::prune_global({w.mut()}, {}, 7, false, 1), std::invalid_argument,
               "k=7 is larger than the number of elements (6)");
}

TEST(error_prune_global_empty_list) {
  CHECK_THROWS(pyprune::prune_global({}, {}, 0, false, 1), std::invalid_argument, "the list of arrays is empty");
}

TEST(error_prune_global_scores_count_mismatch) {
  Array w0 = make(DType::f32, {3}, Dist::normal, 1), w1 = make(DType::f32, {3}, Dist::normal, 2);
  const Array s0 = make(DType::f32, {3}, Dist::normal, 3);
  CHECK_THROWS(pyprune::prune_global({w0.mut(), w1.mut()}, {s0.view()}, 1, false, 1), std::invalid_argument,
               "scores has 1 arrays but weights has 2");
}

TEST(error_prune_global_scores_shape_mismatch) {
  Array w0 = make(DType::f32, {3}, Dist::normal, 1), w1 = make(DType::f32, {2, 3}, Dist::normal, 2);
  const Array s0 = make(DType::f32, {3}, Dist::normal, 3), s1 = make(DType::f32, {3, 2}, Dist::normal, 4);
  CHECK_THROWS(pyprune::prune_global({w0.mut(), w1.mut()}, {s0.view(), s1.view()}, 1, false, 1),
               std::invalid_argument, "scores[1] and weights[1] have different shapes");
  // Nothing was zeroed before the error.
  const Array fresh = make(DType::f32, {2, 3}, Dist::normal, 2);
  CHECK_SEQ_EQ(w1.all_bits(), fresh.all_bits());
}

// ---------------------------------------------------------------------------------------------
// lowest_slices: sorted indices of the k lowest scores; equal scores take the lower index.

namespace {

std::vector<std::int64_t> lowest_reference(const Array& scores, std::size_t k) {
  std::vector<std::int64_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), std::int64_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) {
    return rank_of(scores.get(static_cast<std::size_t>(a)), false) < rank_of(scores.get(static_cast<std::size_t>(b)), false);
  });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

TEST(lowest_slices_match_reference) {
  for (DType dtype : kDTypes)
    for (std::size_t n : kSizes)
      for (Dist dist : {Dist::normal, Dist::ties, Dist::specials, Dist::constant}) {
        CONTEXT(pyprune::dtype_name(dtype), " n=", n, " ", dist_name(dist));
        const Array s = make(dtype, {static_cast<std::int64_t>(n)}, dist, n + 7, n % 3);
        for (std::uint64_t k : ks_for(n)) {
          CONTEXT("k=", k);
          CHECK_SEQ_EQ(pyprune::lowest_slices(s.view(), k, true), lowest_reference(s, k));
        }
      }
}

TEST(error_lowest_slices_k_out_of_range) {
  const Array s = make(DType::f32, {3}, Dist::normal, 1);
  CHECK_THROWS(pyprune::lowest_slices(s.view(), 4, false), std::invalid_argument,
               "k=4 is larger than the number of slices (3)");
}

TEST(error_lowest_slices_nonfinite) {
  Array s = make(DType::f64, {3}, Dist::normal, 1);
  s.set(2, -kInf);
  CHECK_THROWS(pyprune::lowest_slices(s.view(), 1, false), std::invalid_argument, kNonfiniteScores);
}
