#include "pyprune/scores.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>
#include <string>

#include "pyprune/parallel.hpp"

namespace pyprune {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

template <class S>
bool any_nonfinite(const S* p, std::size_t n, int threads) {
  std::atomic<bool> bad{false};
  parallel_for(n, threads, [&](std::size_t b, std::size_t e) {
    bool local = false;
    for (std::size_t i = b; i < e; ++i) local |= !elem<S>::finite(p[i]);
    if (local) bad = true;
  });
  return bad;
}

template <bool Square, class S>
void element_scores_impl(const S* p, std::size_t n, float* out, bool allow, int threads) {
  parallel_for(n, threads, [&](std::size_t b, std::size_t e) {
    bool bad = false;
    for (std::size_t i = b; i < e; ++i) {
      const auto x = elem<S>::load(p[i]);
      bad |= !elem<S>::finite(p[i]);
      out[i] = static_cast<float>(Square ? x * x : std::abs(x));
    }
    if (bad) {
      if (!allow) throw_nonfinite("w");
      for (std::size_t i = b; i < e; ++i)
        if (!elem<S>::finite(p[i])) out[i] = std::numeric_limits<float>::infinity();
    }
  });
}

// Reduction of one contiguous run of |x| (sum, sum of squares or max). NaN stays NaN.
template <class S>
double reduce_run(const S* p, std::size_t n, Norm ord) {
  if (ord == Norm::linf) {
    double m = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const double v = std::abs(static_cast<double>(elem<S>::load(p[i])));
      m = (v > m || v != v) && m == m ? v : m;
    }
    return m;
  }
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  std::size_t i = 0;
  const bool sq = ord == Norm::l2;
  for (; i + 4 <= n; i += 4) {
    const double x0 = elem<S>::load(p[i]), x1 = elem<S>::load(p[i + 1]);
    const double x2 = elem<S>::load(p[i + 2]), x3 = elem<S>::load(p[i + 3]);
    if (sq) {
      a0 += x0 * x0; a1 += x1 * x1; a2 += x2 * x2; a3 += x3 * x3;
    } else {
      a0 += std::abs(x0); a1 += std::abs(x1); a2 += std::abs(x2); a3 += std::abs(x3);
    }
  }
  for (; i < n; ++i) {
    const double x = elem<S>::load(p[i]);
    a0 += sq ? x * x : std::abs(x);
  }
  return (a0 + a1) + (a2 + a3);
}

inline void combine(double& acc, double v, Norm ord) {
  if (ord == Norm::linf)
    acc = (v > acc || v != v) && acc == acc ? v : acc;
  else
    acc += v;
}

struct Dim {
  std::size_t size;
  bool kept;
};

template <class S>
void slice_norms_impl(const Tensor& w, const std::vector<int>& kept_axes, Norm ord, bool allow, int threads,
                      double* out) {
  const S* p = w.as<S>();
  const std::size_t n = w.size();
  // Collapse runs of adjacent kept / reduced axes; size-1 axes change nothing.
  std::vector<Dim> dims;
  std::size_t out_size = 1, reduced = 1;
  for (int a = 0; a < w.ndim(); ++a) {
    const bool kept = std::find(kept_axes.begin(), kept_axes.end(), a) != kept_axes.end();
    const auto s = static_cast<std::size_t>(w.shape[a]);
    (kept ? out_size : reduced) *= s;
    if (s == 1) continue;
    if (!dims.empty() && dims.back().kept == kept)
      dims.back().size *= s;
    else
      dims.push_back({s, kept});
  }
  if (dims.empty()) dims.push_back({1, true});
  const Dim last = dims.back();
  const std::size_t rows = n / last.size;
  // Output stride of each collapsed dim (0 for reduced dims).
  std::vector<std::size_t> ostride(dims.size(), 0);
  for (std::size_t s = 1, i = dims.size(); i-- > 0;)
    if (dims[i].kept) {
      ostride[i] = s;
      s *= dims[i].size;
    }
  bool outer_all_kept = true;
  for (std::size_t i = 0; i + 1 < dims.size(); ++i) outer_all_kept &= dims[i].kept;

  if (!last.kept && outer_all_kept) {
    // Each row is exactly one slice: write the result directly.
    parallel_for(rows, threads, [&](std::size_t b, std::size_t e) {
      for (std::size_t r = b; r < e; ++r) out[r] = reduce_run(p + r * last.size, last.size, ord);
    }, std::max<std::size_t>(1, (1 << 15) / last.size));
  } else {
    std::fill(out, out + out_size, 0.0);
    std::mutex merge;
    parallel_for(rows, threads, [&](std::size_t b, std::size_t e) {
      std::vector<double> acc(out_size, 0.0);
      // Multi-index of row b over the outer collapsed dims.
      const std::size_t nd = dims.size() - 1;
      std::vector<std::size_t> idx(nd, 0);
      std::size_t off = 0;
      for (std::size_t r = b, i = nd; i-- > 0;) {
        idx[i] = r % dims[i].size;
        r /= dims[i].size;
        off += idx[i] * ostride[i];
      }
      for (std::size_t r = b; r < e; ++r) {
        const S* row = p + r * last.size;
        if (last.kept) {
          double* a = acc.data() + off;
          if (ord == Norm::linf) {
            for (std::size_t j = 0; j < last.size; ++j)
              combine(a[j], std::abs(static_cast<double>(elem<S>::load(row[j]))), ord);
          } else if (ord == Norm::l2) {
            for (std::size_t j = 0; j < last.size; ++j) {
              const double x = elem<S>::load(row[j]);
              a[j] += x * x;
            }
          } else {
            for (std::size_t j = 0; j < last.size; ++j) a[j] += std::abs(static_cast<double>(elem<S>::load(row[j])));
          }
        } else {
          combine(acc[off], reduce_run(row, last.size, ord), ord);
        }
        for (std::size_t i = nd; i-- > 0;) {  // advance the multi-index
          off += ostride[i];
          if (++idx[i] < dims[i].size) break;
          off -= ostride[i] * dims[i].size;
          idx[i] = 0;
        }
      }
      std::lock_guard<std::mutex> lock(merge);
      for (std::size_t i = 0; i < out_size; ++i) combine(out[i], acc[i], ord);
    }, std::max<std::size_t>(1, (1 << 15) / last.size));
  }

  bool nonfinite = false;
  for (std::size_t i = 0; i < out_size; ++i) {
    double& v = out[i];
    if (ord == Norm::l2) v = std::sqrt(v);
    if (ord == Norm::mean) v /= static_cast<double>(reduced);
    nonfinite |= !std::isfinite(v);
  }
  if (nonfinite) {
    // An infinite norm can also come from overflow of finite float64 input; only NaN/Inf input is an error.
    if (!allow && any_nonfinite(p, n, threads)) throw_nonfinite("w");
    for (std::size_t i = 0; i < out_size; ++i)
      if (!std::isfinite(out[i])) out[i] = kInf;
  }
}

template <class S>
void wanda_impl(const Tensor& w, const float* norms, int axis, bool allow, int threads, float* out) {
  const S* p = w.as<S>();
  const AxisSplit s = split_at(w.shape, axis);
  parallel_for(s.outer * s.dim, threads, [&](std::size_t b, std::size_t e) {
    bool bad = false;
    for (std::size_t r = b; r < e; ++r) {
      const float scale = norms[r % s.dim];
      const S* row = p + r * s.inner;
      float* o = out + r * s.inner;
      for (std::size_t j = 0; j < s.inner; ++j) {
        bad |= !elem<S>::finite(row[j]);
        o[j] = static_cast<float>(std::abs(elem<S>::load(row[j]))) * scale;
      }
    }
    if (bad) {
      if (!allow) throw_nonfinite("w");
      for (std::size_t i = b * s.inner; i < e * s.inner; ++i)
        if (!elem<S>::finite(p[i]) || std::isnan(out[i])) out[i] = std::numeric_limits<float>::infinity();
    }
  }, std::max<std::size_t>(1, (1 << 15) / std::max<std::size_t>(1, s.inner)));
}

template <class S>
void fpgm_impl(const Tensor& w, int axis, bool allow, int threads, double* out) {
  const S* p = w.as<S>();
  const AxisSplit s = split_at(w.shape, axis);
  const std::size_t k = s.dim, d = s.outer * s.inner;
  // Filters as rows of a dense float64 matrix [k, d].
  std::vector<double> f(k * d);
  std::vector<char> bad(k, 0);
  for (std::size_t o = 0; o < s.outer; ++o)
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t j = 0; j < s.inner; ++j) {
        const S v = p[(o * k + i) * s.inner + j];
        bad[i] |= !elem<S>::finite(v);
        f[i * d + o * s.inner + j] = elem<S>::load(v);
      }
  for (std::size_t i = 0; i < k; ++i)
    if (bad[i] && !allow) throw_nonfinite("w");
  parallel_for(k, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      if (bad[i]) {
        out[i] = kInf;
        continue;
      }
      double total = 0.0;
      for (std::size_t j = 0; j < k; ++j) {
        if (j == i || bad[j]) continue;
        const double* a = f.data() + i * d;
        const double* c = f.data() + j * d;
        double s0 = 0, s1 = 0;
        std::size_t t = 0;
        for (; t + 2 <= d; t += 2) {
          const double x0 = a[t] - c[t], x1 = a[t + 1] - c[t + 1];
          s0 += x0 * x0;
          s1 += x1 * x1;
        }
        if (t < d) s0 += (a[t] - c[t]) * (a[t] - c[t]);
        total += std::sqrt(s0 + s1);
      }
      out[i] = total;
    }
  }, 1);
}

inline std::uint64_t splitmix_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

void element_scores(const Tensor& w, float* out, bool square, bool allow_nonfinite, int threads) {
  dispatch(w.dtype, [&](auto tag) {
    using S = decltype(tag);
    if (square)
      element_scores_impl<true>(w.as<S>(), w.size(), out, allow_nonfinite, threads);
    else
      element_scores_impl<false>(w.as<S>(), w.size(), out, allow_nonfinite, threads);
  });
}

void slice_norms(const Tensor& w, const std::vector<int>& kept_axes, Norm ord, bool allow_nonfinite, int threads,
                 double* out) {
  for (std::size_t i = 0; i < kept_axes.size(); ++i) {
    if (kept_axes[i] < 0 || kept_axes[i] >= w.ndim())
      throw std::invalid_argument("axis " + std::to_string(kept_axes[i]) + " is out of range for a " +
                                  std::to_string(w.ndim()) + "-D tensor");
    if (i && kept_axes[i] <= kept_axes[i - 1]) throw std::invalid_argument("kept axes must be strictly increasing");
  }
  if (w.size() == 0) throw std::invalid_argument("w is empty");
  dispatch(w.dtype, [&](auto tag) {
    slice_norms_impl<decltype(tag)>(w, kept_axes, ord, allow_nonfinite, threads, out);
  });
}

void wanda_scores(const Tensor& w, const float* input_norms, int axis, bool allow_nonfinite, int threads,
                  float* out) {
  dispatch(w.dtype, [&](auto tag) { wanda_impl<decltype(tag)>(w, input_norms, axis, allow_nonfinite, threads, out); });
}

void fpgm_scores(const Tensor& w, int axis, bool allow_nonfinite, int threads, double* out) {
  dispatch(w.dtype, [&](auto tag) { fpgm_impl<decltype(tag)>(w, axis, allow_nonfinite, threads, out); });
}

void random_scores(std::size_t n, std::uint64_t seed, int threads, float* out) {
  const std::uint64_t golden = 0x9E3779B97F4A7C15ull;
  const std::uint64_t base = splitmix_mix(seed + golden);
  parallel_for(n, threads, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      const std::uint64_t z = splitmix_mix(base + (static_cast<std::uint64_t>(i) + 1) * golden);
      out[i] = static_cast<float>(static_cast<double>(z >> 40) * 0x1.0p-24);
    }
  });
}

}  // namespace pyprune
