#include "pyprune/select.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>

#include "pyprune/parallel.hpp"
#include "pyprune/simd.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#define PYPRUNE_SSE2 1
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// AVX2 variants are compiled alongside the SSE2 baseline and chosen at run time.
#include <immintrin.h>
#define PYPRUNE_AVX2 1
#define PYPRUNE_TARGET_AVX2 __attribute__((target("avx2")))
#endif

namespace pyprune {

namespace {

// ---------------------------------------------------------------------------------------------
// Order-preserving integer keys of float values: comparing keys as unsigned integers compares the
// values (or magnitudes). -0 and +0 share a key; NaN/Inf get the largest key.

template <class K>
struct KeyTraits;
template <>
struct KeyTraits<std::uint32_t> {
  using F = float;
  static constexpr std::uint32_t sign = 0x80000000u;
};
template <>
struct KeyTraits<std::uint64_t> {
  using F = double;
  static constexpr std::uint64_t sign = 0x8000000000000000ull;
};

template <class K, bool Magnitude, class S>
inline K key_of(S x) {
  using F = typename KeyTraits<K>::F;
  constexpr K sign = KeyTraits<K>::sign;
  K u = bit_cast<K>(static_cast<F>(elem<S>::load(x)));
  K key;
  if (Magnitude) {
    key = u & ~sign;
  } else {
    if (u == sign) u = 0;
    key = (u & sign) ? static_cast<K>(~u) : static_cast<K>(u | sign);
  }
  return elem<S>::finite(x) ? key : static_cast<K>(~K(0));
}

template <class K, bool Magnitude>
double value_of(K key) {
  using F = typename KeyTraits<K>::F;
  constexpr K sign = KeyTraits<K>::sign;
  if (key == static_cast<K>(~K(0))) return std::numeric_limits<double>::infinity();
  if (Magnitude) return static_cast<double>(bit_cast<F>(key));
  const K u = (key & sign) ? static_cast<K>(key & ~sign) : static_cast<K>(~key);
  return static_cast<double>(bit_cast<F>(u));
}

// ---------------------------------------------------------------------------------------------
// A list of tensors seen as one concatenated index space, walked in segments of one tensor each.

std::vector<std::size_t> offsets_of(const std::vector<Tensor>& ts) {
  std::vector<std::size_t> off(ts.size() + 1, 0);
  for (std::size_t t = 0; t < ts.size(); ++t) off[t + 1] = off[t] + ts[t].size();
  return off;
}

template <class Fn>
void for_segments(const std::vector<std::size_t>& off, std::size_t b, std::size_t e, Fn&& fn) {
  std::size_t t = static_cast<std::size_t>(std::upper_bound(off.begin(), off.end(), b) - off.begin()) - 1;
  while (b < e) {
    const std::size_t hi = std::min(e, off[t + 1]);
    if (hi > b) fn(t, b - off[t], hi - off[t]);
    b = hi;
    ++t;
  }
}

// Calls body(p) with the typed pointer of tensor t's data.
template <class Body>
void typed(const Tensor& t, Body&& body) {
  dispatch(t.dtype, [&](auto tag) {
    using S = decltype(tag);
    body(t.as<S>());
  });
}

// An element (tensor t, flat index i, key) is selected iff key < key_ or key == key_ and (t, i)
// comes before (tensor, pos) in list-then-flat order.
template <class K>
struct Cut {
  K key = 0;
  std::size_t tensor = 0;
  std::size_t pos = 0;
  // Within tensor t, elements with index < limit(t) are selected when key <= cut key, others when key < cut key.
  std::size_t limit(std::size_t t) const {
    return t < tensor ? std::numeric_limits<std::size_t>::max() : t == tensor ? pos : 0;
  }
};

template <class K>
struct Found {
  Cut<K> cut;
  std::vector<std::int64_t> counts, ties;
};

constexpr int kDigit = 11;

// Per-tensor histogram of the digit (key >> shift) & (2^width - 1) over elements whose bits above
// shift + width equal prefix (all elements when !filter).
template <class K, bool Mag>
std::vector<std::vector<std::uint64_t>> histogram_pass(const std::vector<Tensor>& ts,
                                                       const std::vector<std::size_t>& off, int shift, int width,
                                                       K prefix, bool filter, bool allow, int threads) {
  const std::size_t bins = std::size_t{1} << width;
  std::vector<std::vector<std::uint64_t>> hist(ts.size(), std::vector<std::uint64_t>(bins, 0));
  std::mutex merge;
  const K digit_mask = static_cast<K>(bins - 1);
  parallel_for(off.back(), threads, [&](std::size_t b, std::size_t e) {
    // Four interleaved sub-histograms so runs of equal digits do not serialise on one counter.
    std::vector<std::uint32_t> local(4 * bins);
    for_segments(off, b, e, [&](std::size_t t, std::size_t lo, std::size_t hi) {
      typed(ts[t], [&](auto p) {
        for (std::size_t blo = lo; blo < hi; blo += (std::size_t{1} << 30)) {
          const std::size_t bhi = std::min(hi, blo + (std::size_t{1} << 30));
          bool bad = false;
          std::size_t i = blo;
          if (bhi - blo < bins) {
            // Small tensors (biases...): count straight into the shared histogram.
            std::vector<std::uint32_t> digits;
            digits.reserve(bhi - blo);
            for (; i < bhi; ++i) {
              const K k0 = key_of<K, Mag>(p[i]);
              bad |= k0 == static_cast<K>(~K(0));
              if (!filter || (k0 >> (shift + width)) == prefix)
                digits.push_back(static_cast<std::uint32_t>((k0 >> shift) & digit_mask));
            }
            if (bad && !allow && !filter) throw_nonfinite("scores");
            std::lock_guard<std::mutex> lock(merge);
            for (auto d : digits) ++hist[t][d];
            continue;
          }
          std::fill(local.begin(), local.end(), 0u);
          if (!filter) {
            for (; i + 4 <= bhi; i += 4) {
              const K k0 = key_of<K, Mag>(p[i]), k1 = key_of<K, Mag>(p[i + 1]);
              const K k2 = key_of<K, Mag>(p[i + 2]), k3 = key_of<K, Mag>(p[i + 3]);
              bad |= (k0 == static_cast<K>(~K(0))) | (k1 == static_cast<K>(~K(0))) |
                     (k2 == static_cast<K>(~K(0))) | (k3 == static_cast<K>(~K(0)));
              ++local[(k0 >> shift) & digit_mask];
              ++local[bins + ((k1 >> shift) & digit_mask)];
              ++local[2 * bins + ((k2 >> shift) & digit_mask)];
              ++local[3 * bins + ((k3 >> shift) & digit_mask)];
            }
            for (; i < bhi; ++i) {
              const K k0 = key_of<K, Mag>(p[i]);
              bad |= k0 == static_cast<K>(~K(0));
              ++local[(k0 >> shift) & digit_mask];
            }
            if (bad && !allow) throw_nonfinite("scores");
          } else {
            const int above = shift + width;
            for (; i < bhi; ++i) {
              const K k0 = key_of<K, Mag>(p[i]);
              if ((k0 >> above) == prefix) ++local[(k0 >> shift) & digit_mask];
            }
          }
          std::lock_guard<std::mutex> lock(merge);
          auto& h = hist[t];
          for (std::size_t j = 0; j < bins; ++j)
            h[j] += static_cast<std::uint64_t>(local[j]) + local[bins + j] + local[2 * bins + j] + local[3 * bins + j];
        }
      });
    });
  });
  return hist;
}

// With the cut key known, `rank` elements equal to it are still to be taken, in list order then flat
// order; equal[t] is how many tensor t holds. Fills found.ties and the cut position.
template <class K, bool Mag>
void resolve_ties(const std::vector<Tensor>& ts, K key, std::uint64_t rank, const std::vector<std::uint64_t>& equal,
                  Found<K>& found) {
  Cut<K>& cut = found.cut;
  cut.key = key;
  std::uint64_t remaining = rank;
  std::size_t last = 0;
  for (std::size_t t = 0; t < ts.size() && remaining > 0; ++t) {
    const std::uint64_t take = std::min(remaining, equal[t]);
    found.ties[t] = static_cast<std::int64_t>(take);
    remaining -= take;
    if (take > 0) last = t;
  }
  cut.tensor = last;
  const std::uint64_t want = static_cast<std::uint64_t>(found.ties[last]);
  if (want == equal[last]) {
    cut.pos = ts[last].size();
    return;
  }
  // Position just after the want-th element equal to the key in tensor `last`.
  typed(ts[last], [&](auto p) {
    std::uint64_t seen = 0;
    for (std::size_t i = 0;; ++i)
      if (key_of<K, Mag>(p[i]) == key && ++seen == want) {
        cut.pos = i + 1;
        break;
      }
  });
}

inline bool has_avx2() {
#if PYPRUNE_AVX2
  return simd::avx2_enabled();
#else
  return false;
#endif
}

#if PYPRUNE_SSE2
// float32 keys four at a time, as signed integers: skey = key_of(x) ^ sign, so signed order of skey is
// the unsigned order of key_of (SSE2 has no unsigned compares). NaN/Inf give INT32_MAX.
template <bool Mag>
inline __m128i signed_keys_f32(__m128i bits) {
  const __m128i sign = _mm_set1_epi32(static_cast<int>(0x80000000u));
  const __m128i abs_mask = _mm_set1_epi32(0x7FFFFFFF);
  const __m128i exp_mask = _mm_set1_epi32(0x7F800000);
  const __m128i nonfinite = _mm_cmpeq_epi32(_mm_and_si128(bits, exp_mask), exp_mask);
  __m128i s;
  if (Mag) {
    s = _mm_xor_si128(_mm_and_si128(bits, abs_mask), sign);
  } else {
    // Negative values flip their magnitude bits; -0 joins +0.
    const __m128i neg = _mm_srai_epi32(bits, 31);
    s = _mm_xor_si128(bits, _mm_and_si128(neg, abs_mask));
    s = _mm_andnot_si128(_mm_cmpeq_epi32(bits, sign), s);
  }
  return _mm_or_si128(_mm_andnot_si128(nonfinite, s), _mm_and_si128(nonfinite, abs_mask));
}
#endif

#if PYPRUNE_AVX2
// The same eight at a time.
template <bool Mag>
PYPRUNE_TARGET_AVX2 inline __m256i signed_keys_f32_avx2(__m256i bits) {
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i exp_mask = _mm256_set1_epi32(0x7F800000);
  const __m256i nonfinite = _mm256_cmpeq_epi32(_mm256_and_si256(bits, exp_mask), exp_mask);
  __m256i s;
  if (Mag) {
    s = _mm256_xor_si256(_mm256_and_si256(bits, abs_mask), sign);
  } else {
    const __m256i neg = _mm256_srai_epi32(bits, 31);
    s = _mm256_xor_si256(bits, _mm256_and_si256(neg, abs_mask));
    s = _mm256_andnot_si256(_mm256_cmpeq_epi32(bits, sign), s);
  }
  return _mm256_blendv_epi8(s, abs_mask, nonfinite);
}

// count_bracket's vector loop with AVX2; advances i past the last full vector.
template <bool Mag>
PYPRUNE_TARGET_AVX2 bool count_bracket_avx2(const float* p, std::size_t& pos, std::size_t hi, std::uint32_t from,
                                            std::uint32_t to, std::uint64_t& less, std::vector<std::uint32_t>& keys) {
  std::size_t i = pos;  // a local: push_back could otherwise make the compiler store it every step
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i from_s = _mm256_set1_epi32(static_cast<int>(from ^ 0x80000000u));
  const __m256i to_s = _mm256_set1_epi32(static_cast<int>(to ^ 0x80000000u));
  const __m256i worst = _mm256_set1_epi32(0x7FFFFFFF);
  bool bad = false;
  while (i + 8 <= hi) {
    // Lane counters are flushed before they can overflow.
    const std::size_t stop = i + std::min<std::size_t>((hi - i) & ~std::size_t{7}, std::size_t{1} << 28);
    __m256i below = _mm256_setzero_si256(), nonfinite = _mm256_setzero_si256();
    for (; i < stop; i += 8) {
      const __m256i k = signed_keys_f32_avx2<Mag>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
      const __m256i lt = _mm256_cmpgt_epi32(from_s, k);
      below = _mm256_sub_epi32(below, lt);
      nonfinite = _mm256_or_si256(nonfinite, _mm256_cmpeq_epi32(k, worst));
      const __m256i out = _mm256_or_si256(lt, _mm256_cmpgt_epi32(k, to_s));
      unsigned inside = ~static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(out))) & 0xFFu;
      if (inside) {
        alignas(32) std::uint32_t lane[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lane), _mm256_xor_si256(k, sign));
        for (; inside; inside &= inside - 1) keys.push_back(lane[__builtin_ctz(inside)]);
      }
    }
    alignas(32) std::uint32_t lane[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lane), below);
    for (std::uint32_t c : lane) less += c;
    bad |= !_mm256_testz_si256(nonfinite, nonfinite);
  }
  pos = i;
  return bad;
}

// zero_selected's vector loop with AVX2: clears w where the signed key of s is below `bound`.
template <bool Mag>
PYPRUNE_TARGET_AVX2 void zero_below_avx2(const float* s, std::uint32_t* w, std::size_t& i, std::size_t end,
                                         std::int32_t bound) {
  const __m256i b = _mm256_set1_epi32(bound);
  for (; i + 8 <= end; i += 8) {
    const __m256i k = signed_keys_f32_avx2<Mag>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    __m256i* dst = reinterpret_cast<__m256i*>(w + i);
    _mm256_storeu_si256(dst, _mm256_andnot_si256(_mm256_cmpgt_epi32(b, k), _mm256_loadu_si256(dst)));
  }
}
#endif

// Counts keys below `from` and appends the keys inside [from, to] of p[lo, hi). Returns whether a
// NaN/Inf was seen.
template <class K, bool Mag, class S>
bool count_bracket(const S* p, std::size_t lo, std::size_t hi, K from, K to, std::uint64_t& less,
                   std::vector<K>& keys) {
  std::size_t i = lo;
  bool bad = false;
#if PYPRUNE_AVX2
  if constexpr (std::is_same_v<S, float> && std::is_same_v<K, std::uint32_t>)
    if (has_avx2()) bad |= count_bracket_avx2<Mag>(p, i, hi, from, to, less, keys);
#endif
#if PYPRUNE_SSE2
  if constexpr (std::is_same_v<S, float> && std::is_same_v<K, std::uint32_t>) {
    // Vector compares; the ~1% of keys inside the bracket are picked out through a movemask.
    const __m128i sign = _mm_set1_epi32(static_cast<int>(0x80000000u));
    const __m128i from_s = _mm_xor_si128(_mm_set1_epi32(static_cast<int>(from)), sign);
    const __m128i to_s = _mm_xor_si128(_mm_set1_epi32(static_cast<int>(to)), sign);
    const __m128i worst = _mm_set1_epi32(0x7FFFFFFF);
    while (i + 4 <= hi) {
      // Lane counters are flushed before they can overflow.
      const std::size_t stop = i + std::min<std::size_t>((hi - i) & ~std::size_t{3}, std::size_t{1} << 28);
      __m128i below = _mm_setzero_si128(), nonfinite = _mm_setzero_si128();
      for (; i < stop; i += 4) {
        const __m128i k = signed_keys_f32<Mag>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)));
        const __m128i lt = _mm_cmplt_epi32(k, from_s);
        below = _mm_sub_epi32(below, lt);
        nonfinite = _mm_or_si128(nonfinite, _mm_cmpeq_epi32(k, worst));
        const __m128i out = _mm_or_si128(lt, _mm_cmpgt_epi32(k, to_s));
        int inside = ~_mm_movemask_ps(_mm_castsi128_ps(out)) & 0xF;
        if (inside) {
          alignas(16) std::uint32_t lane[4];
          _mm_store_si128(reinterpret_cast<__m128i*>(lane), _mm_xor_si128(k, sign));
          for (; inside; inside &= inside - 1) keys.push_back(lane[__builtin_ctz(static_cast<unsigned>(inside))]);
        }
      }
      alignas(16) std::uint32_t lane[4];
      _mm_store_si128(reinterpret_cast<__m128i*>(lane), below);
      less += std::uint64_t{lane[0]} + lane[1] + lane[2] + lane[3];
      bad |= _mm_movemask_epi8(nonfinite) != 0;
    }
  }
#endif
  for (; i < hi; ++i) {
    const K key = key_of<K, Mag>(p[i]);
    bad |= key == static_cast<K>(~K(0));
    less += key < from;
    if (key >= from && key <= to) keys.push_back(key);
  }
  return bad;
}

// One-pass selection for large inputs: a strided sample brackets the k-th key in [lo, hi]; one pass
// counts keys below lo per tensor and collects the keys inside the bracket; the k-th is selected
// among those. Returns false (nothing decided) when the bracket misses or holds too many keys, and
// the caller falls back to the exact radix refinement.
template <class K, bool Mag>
bool sampled_cut(const std::vector<Tensor>& ts, const std::vector<std::size_t>& off, std::uint64_t k, bool allow,
                 int threads, Found<K>& found) {
  const std::size_t nt = ts.size(), total = off.back();
  const std::size_t samples = std::min<std::size_t>(total, std::size_t{1} << 18);
  const std::size_t step = total / samples;
  std::vector<K> sample(samples);
  parallel_for(samples, threads, [&](std::size_t b, std::size_t e) {
    for_segments(off, b * step, e * step, [&](std::size_t t, std::size_t lo, std::size_t hi) {
      typed(ts[t], [&](auto p) {
        // first multiple of step at or after off[t] + lo
        std::size_t g = off[t] + lo;
        g = (g + step - 1) / step * step;
        std::size_t slot = g / step;  // no division per sample
        for (std::size_t i = g - off[t]; i < hi; i += step) sample[slot++] = key_of<K, Mag>(p[i]);
      });
    });
  });
  const double p = static_cast<double>(k) / static_cast<double>(total);
  const double centre = p * static_cast<double>(samples);
  const double margin = 5.0 * std::sqrt(static_cast<double>(samples) * p * (1.0 - p)) + 32.0;
  const double rlo = centre - margin, rhi = centre + margin;
  K lo = 0, hi = static_cast<K>(~K(0));
  if (rlo >= 0) {
    auto it = sample.begin() + static_cast<std::ptrdiff_t>(rlo);
    std::nth_element(sample.begin(), it, sample.end());
    lo = *it;
  }
  if (rhi < static_cast<double>(samples)) {
    // After the first nth_element everything past rlo is at least lo: search only there.
    auto first = rlo >= 0 ? sample.begin() + static_cast<std::ptrdiff_t>(rlo) : sample.begin();
    auto it = sample.begin() + static_cast<std::ptrdiff_t>(rhi);
    std::nth_element(first, it, sample.end());
    hi = *it;
  }
  // Collect keys in [lo, hi]; give up beyond the cap (a bracket full of ties, say).
  const std::size_t cap = std::max<std::size_t>(std::size_t{1} << 16, total / 16);
  struct Chunk {
    std::size_t tensor;
    std::vector<K> keys;
  };
  std::vector<Chunk> chunks;
  std::vector<std::uint64_t> below(nt, 0);
  std::atomic<std::size_t> collected{0};
  std::atomic<bool> overflow{false};
  std::mutex merge;
  parallel_for(total, threads, [&](std::size_t b, std::size_t e) {
    std::vector<std::uint64_t> local_below(nt, 0);
    std::vector<Chunk> local;
    for_segments(off, b, e, [&](std::size_t t, std::size_t slo, std::size_t shi) {
      if (overflow) return;
      Chunk chunk{t, {}};
      bool bad = false;
      std::uint64_t less = 0;
      typed(ts[t], [&](auto ptr) { bad = count_bracket<K, Mag>(ptr, slo, shi, lo, hi, less, chunk.keys); });
      if (bad && !allow) throw_nonfinite("scores");
      local_below[t] += less;
      if ((collected += chunk.keys.size()) > cap) overflow = true;
      local.push_back(std::move(chunk));
    });
    std::lock_guard<std::mutex> lock(merge);
    for (std::size_t t = 0; t < nt; ++t) below[t] += local_below[t];
    for (auto& c : local) chunks.push_back(std::move(c));
  });
  if (overflow) return false;
  std::uint64_t less_total = 0, inside = 0;
  for (auto b : below) less_total += b;
  for (const auto& c : chunks) inside += c.keys.size();
  if (k <= less_total || k > less_total + inside) return false;  // the bracket missed the k-th key
  const std::uint64_t rank = k - less_total;  // 1-based rank inside the bracket
  // Histogram the bracket keys by their offset from lo (at most 2^16 bins), find the bin holding the
  // rank-th key, and select exactly among that bin's few keys.
  const K span = static_cast<K>(hi - lo);
  int shift = 0;
  while ((span >> shift) >= (K{1} << 16)) ++shift;
  std::vector<std::uint32_t> hist(static_cast<std::size_t>(span >> shift) + 1, 0);
  for (const auto& c : chunks)
    for (K x : c.keys) ++hist[static_cast<std::size_t>(static_cast<K>(x - lo) >> shift)];
  std::size_t bin = 0;
  std::uint64_t before = 0;
  while (before + hist[bin] < rank) before += hist[bin++];
  std::vector<K> in_bin;
  in_bin.reserve(hist[bin]);
  for (const auto& c : chunks)
    for (K x : c.keys)
      if (static_cast<std::size_t>(static_cast<K>(x - lo) >> shift) == bin) in_bin.push_back(x);
  auto nth = in_bin.begin() + static_cast<std::ptrdiff_t>(rank - before - 1);
  std::nth_element(in_bin.begin(), nth, in_bin.end());
  const K key = *nth;
  std::vector<std::uint64_t> equal(nt, 0);
  std::uint64_t less_than_key = 0;
  for (const auto& c : chunks) {
    std::uint64_t lt = 0, eq = 0;
    for (K x : c.keys) {
      lt += x < key;
      eq += x == key;
    }
    below[c.tensor] += lt;
    less_than_key += lt;
    equal[c.tensor] += eq;
  }
  resolve_ties<K, Mag>(ts, key, rank - less_than_key, equal, found);
  for (std::size_t t = 0; t < nt; ++t) found.counts[t] = static_cast<std::int64_t>(below[t]) + found.ties[t];
  return true;
}

template <class K, bool Mag>
Found<K> find_cut(const std::vector<Tensor>& ts, const std::vector<std::size_t>& off, std::uint64_t k, bool allow,
                  int threads) {
  constexpr int W = 8 * sizeof(K);
  const std::size_t nt = ts.size(), total = off.back();
  if (k > total) throw std::invalid_argument("k=" + std::to_string(k) + " is larger than the number of elements (" +
                                             std::to_string(total) + ")");
  Found<K> found;
  found.counts.assign(nt, 0);
  found.ties.assign(nt, 0);
  std::vector<std::uint64_t> below(nt, 0);
  if (k == 0) {
    // Nothing selected; still reject NaN/Inf like every other k.
    if (!allow) histogram_pass<K, Mag>(ts, off, W - kDigit, kDigit, 0, false, allow, threads);
    return found;
  }
  if (total >= (std::size_t{1} << 20) && sampled_cut<K, Mag>(ts, off, k, allow, threads, found)) return found;
  // Refine the key of the k-th lowest digit by digit; `rank` is its rank among elements sharing `prefix`.
  std::uint64_t rank = k, matching = total;
  K prefix = 0;
  int resolved = 0;
  std::vector<std::uint64_t> equal(nt, 0);
  const std::uint64_t cap = std::max<std::uint64_t>(1 << 16, total / 1024);
  bool first = true;
  while (resolved < W && (first || matching > cap)) {
    const int hi = W - resolved, width = std::min(kDigit, hi), shift = hi - width;
    auto hist = histogram_pass<K, Mag>(ts, off, shift, width, prefix, resolved > 0, allow, threads);
    first = false;
    std::size_t bin = 0;
    for (;; ++bin) {
      std::uint64_t in_bin = 0;
      for (std::size_t t = 0; t < nt; ++t) in_bin += hist[t][bin];
      if (rank <= in_bin) {
        matching = in_bin;
        break;
      }
      rank -= in_bin;
      for (std::size_t t = 0; t < nt; ++t) below[t] += hist[t][bin];
    }
    for (std::size_t t = 0; t < nt; ++t) equal[t] = hist[t][bin];
    prefix = static_cast<K>((width == W ? K(0) : static_cast<K>(prefix << width)) | static_cast<K>(bin));
    resolved += width;
  }

  Cut<K>& cut = found.cut;
  if (resolved == W) {
    resolve_ties<K, Mag>(ts, prefix, rank, equal, found);
  } else {
    // Few candidates left: collect (key, global index) and select exactly among them.
    const int above = W - resolved;
    std::vector<std::pair<K, std::uint64_t>> cands;
    std::mutex merge;
    parallel_for(total, threads, [&](std::size_t b, std::size_t e) {
      std::vector<std::pair<K, std::uint64_t>> local;
      for_segments(off, b, e, [&](std::size_t t, std::size_t lo, std::size_t hi) {
        typed(ts[t], [&](auto p) {
          for (std::size_t i = lo; i < hi; ++i) {
            const K key = key_of<K, Mag>(p[i]);
            if (above >= W || (key >> above) == prefix) local.emplace_back(key, off[t] + i);
          }
        });
      });
      std::lock_guard<std::mutex> lock(merge);
      cands.insert(cands.end(), local.begin(), local.end());
    });
    auto nth = cands.begin() + static_cast<std::ptrdiff_t>(rank - 1);
    std::nth_element(cands.begin(), nth, cands.end());
    const auto pivot = *nth;
    cut.key = pivot.first;
    cut.tensor = static_cast<std::size_t>(std::upper_bound(off.begin(), off.end(), pivot.second) - off.begin()) - 1;
    cut.pos = pivot.second - off[cut.tensor] + 1;
    for (const auto& c : cands) {
      if (c.first > pivot.first || (c.first == pivot.first && c.second > pivot.second)) continue;
      const std::size_t t = static_cast<std::size_t>(std::upper_bound(off.begin(), off.end(), c.second) - off.begin()) - 1;
      if (c.first < pivot.first)
        ++below[t];
      else
        ++found.ties[t];
    }
  }
  for (std::size_t t = 0; t < nt; ++t) found.counts[t] = static_cast<std::int64_t>(below[t]) + found.ties[t];
  return found;
}

// Calls fn(K{}, integral_constant<bool, Magnitude>) with 64-bit keys if any tensor is float64.
template <class Fn>
decltype(auto) with_keys(const std::vector<Tensor>& ts, bool magnitude, Fn&& fn) {
  bool wide = false;
  for (const auto& t : ts) wide |= t.dtype == DType::f64;
  if (wide)
    return magnitude ? fn(std::uint64_t{}, std::true_type{}) : fn(std::uint64_t{}, std::false_type{});
  return magnitude ? fn(std::uint32_t{}, std::true_type{}) : fn(std::uint32_t{}, std::false_type{});
}

void check_list(const std::vector<Tensor>& ts) {
  if (ts.empty()) throw std::invalid_argument("the list of arrays is empty");
}

}  // namespace

GlobalSelection global_select(const std::vector<Tensor>& scores, std::uint64_t k, bool magnitude,
                              bool allow_nonfinite, int threads) {
  check_list(scores);
  const auto off = offsets_of(scores);
  return with_keys(scores, magnitude, [&](auto ktag, auto mag) {
    using K = decltype(ktag);
    auto found = find_cut<K, decltype(mag)::value>(scores, off, k, allow_nonfinite, threads);
    GlobalSelection out;
    out.threshold = k == 0 ? -std::numeric_limits<double>::infinity() : value_of<K, decltype(mag)::value>(found.cut.key);
    out.counts = std::move(found.counts);
    out.ties = std::move(found.ties);
    return out;
  });
}

void global_masks(const std::vector<Tensor>& scores, std::uint64_t k, bool allow_nonfinite, int threads,
                  const std::vector<std::uint8_t*>& keep) {
  check_list(scores);
  const auto off = offsets_of(scores);
  with_keys(scores, false, [&](auto ktag, auto mag) {
    using K = decltype(ktag);
    constexpr bool Mag = decltype(mag)::value;
    const auto found = find_cut<K, Mag>(scores, off, k, allow_nonfinite, threads);
    const Cut<K> cut = found.cut;
    const bool none = k == 0;
    parallel_for(off.back(), threads, [&](std::size_t b, std::size_t e) {
      for_segments(off, b, e, [&](std::size_t t, std::size_t lo, std::size_t hi) {
        std::uint8_t* out = keep[t];
        typed(scores[t], [&](auto p) {
          if (none) {
            std::fill(out + lo, out + hi, std::uint8_t{1});
            return;
          }
          const std::size_t mid = std::clamp(cut.limit(t), lo, hi);
          const K key = cut.key;  // a local: stores through uint8 may alias the capture
          for (std::size_t i = lo; i < mid; ++i) out[i] = key_of<K, Mag>(p[i]) > key;
          for (std::size_t i = mid; i < hi; ++i) out[i] = key_of<K, Mag>(p[i]) >= key;
        });
      });
    });
  });
}

namespace {

// Zeroes w[i] where the key of s[i] is selected: key <= cut before `mid`, key < cut from there on.
template <class K, bool Mag, class SS, class WS>
void zero_selected(const SS* s, WS* w, std::size_t lo, std::size_t hi, std::size_t mid, K cut) {
  using Bits = typename elem<WS>::bits;
  Bits* wb = reinterpret_cast<Bits*>(w);
  std::size_t i = lo;
#if PYPRUNE_SSE2
  if constexpr (std::is_same_v<SS, float> && std::is_same_v<WS, float> && std::is_same_v<K, std::uint32_t>) {
    const __m128i sign = _mm_set1_epi32(static_cast<int>(0x80000000u));
    const __m128i cut_s = _mm_xor_si128(_mm_set1_epi32(static_cast<int>(cut)), sign);
    // key <= cut  <=>  key < cut + 1; that would wrap for the NaN/Inf key, whose ties take the scalar loop.
    const __m128i cut_s1 = _mm_add_epi32(cut_s, _mm_set1_epi32(1));
    auto run = [&](std::size_t end, __m128i bound) {
#if PYPRUNE_AVX2
      if (has_avx2()) zero_below_avx2<Mag>(s, wb, i, end, _mm_cvtsi128_si32(bound));
#endif
      for (; i + 4 <= end; i += 4) {
        const __m128i k = signed_keys_f32<Mag>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
        __m128i* dst = reinterpret_cast<__m128i*>(wb + i);
        _mm_storeu_si128(dst, _mm_andnot_si128(_mm_cmplt_epi32(k, bound), _mm_loadu_si128(dst)));
      }
    };
    if (mid > lo && cut != static_cast<K>(~K(0))) run(mid, cut_s1);
    for (; i < mid; ++i) wb[i] &= static_cast<Bits>(static_cast<Bits>(key_of<K, Mag>(s[i]) <= cut) - 1);
    run(hi, cut_s);
  }
#endif
  for (; i < mid; ++i) wb[i] &= static_cast<Bits>(static_cast<Bits>(key_of<K, Mag>(s[i]) <= cut) - 1);
  for (; i < hi; ++i) wb[i] &= static_cast<Bits>(static_cast<Bits>(key_of<K, Mag>(s[i]) < cut) - 1);
}

}  // namespace

std::vector<std::int64_t> prune_global(const std::vector<MutableTensor>& weights, const std::vector<Tensor>& scores,
                                       std::uint64_t k, bool allow_nonfinite, int threads) {
  std::vector<Tensor> views;
  for (const auto& w : weights) views.push_back(w.view());
  check_list(views);
  const bool by_magnitude = scores.empty();
  if (!by_magnitude) {
    if (scores.size() != weights.size())
      throw std::invalid_argument("scores has " + std::to_string(scores.size()) + " arrays but weights has " +
                                  std::to_string(weights.size()));
    for (std::size_t t = 0; t < scores.size(); ++t)
      if (scores[t].shape != weights[t].shape)
        throw std::invalid_argument("scores[" + std::to_string(t) + "] and weights[" + std::to_string(t) +
                                    "] have different shapes");
  }
  const std::vector<Tensor>& keys = by_magnitude ? views : scores;
  const auto off = offsets_of(keys);
  std::vector<std::int64_t> zeroed(weights.size(), 0);
  if (k == 0) {
    if (!allow_nonfinite) global_select(keys, 0, by_magnitude, false, threads);  // still reject NaN/Inf
    return zeroed;
  }
  with_keys(keys, by_magnitude, [&](auto ktag, auto mag) {
    using K = decltype(ktag);
    constexpr bool Mag = decltype(mag)::value;
    const auto found = find_cut<K, Mag>(keys, off, k, allow_nonfinite, threads);
    const Cut<K> cut = found.cut;
    parallel_for(off.back(), threads, [&](std::size_t b, std::size_t e) {
      for_segments(off, b, e, [&](std::size_t t, std::size_t lo, std::size_t hi) {
        const std::size_t mid = std::clamp(cut.limit(t), lo, hi);
        typed(keys[t], [&](auto s) {
          dispatch(weights[t].dtype, [&](auto wtag) {
            using WS = decltype(wtag);
            zero_selected<K, Mag>(s, weights[t].as<WS>(), lo, hi, mid, cut.key);
          });
        });
      });
    });
    // Exactly the selected elements are zeroed (some may have been zero already).
    zeroed = found.counts;
  });
  return zeroed;
}

std::vector<std::int64_t> lowest_slices(const Tensor& scores, std::size_t k, bool allow_nonfinite) {
  const std::size_t n = scores.size();
  if (k > n)
    throw std::invalid_argument("k=" + std::to_string(k) + " is larger than the number of slices (" +
                                std::to_string(n) + ")");
  std::vector<std::pair<std::uint64_t, std::int64_t>> order(n);
  typed(scores, [&](auto p) {
    for (std::size_t i = 0; i < n; ++i) {
      if (!allow_nonfinite && !elem<std::remove_cv_t<std::remove_pointer_t<decltype(p)>>>::finite(p[i]))
        throw_nonfinite("scores");
      order[i] = {key_of<std::uint64_t, false>(p[i]), static_cast<std::int64_t>(i)};
    }
  });
  if (k < n) std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end());
  std::vector<std::int64_t> idx(k);
  for (std::size_t i = 0; i < k; ++i) idx[i] = order[i].second;
  std::sort(idx.begin(), idx.end());
  return idx;
}

namespace {

// Keeps the n best of m keys; "better" = larger key, or equal key at a lower position.
template <class K>
inline void keep_best(const K* keys, int n, int m, std::uint8_t* keep, std::size_t stride) {
  if (m <= 16) {
    for (int j = 0; j < m; ++j) {
      int better = 0;
      for (int l = 0; l < m; ++l) better += (keys[l] > keys[j]) | ((keys[l] == keys[j]) & (l < j));
      keep[j * stride] = better < n;
    }
    return;
  }
  std::vector<std::pair<K, int>> order(m);
  for (int j = 0; j < m; ++j) order[j] = {keys[j], j};
  std::nth_element(order.begin(), order.begin() + n, order.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  for (int j = 0; j < m; ++j) keep[j * stride] = 0;
  for (int j = 0; j < n; ++j) keep[order[j].second * stride] = 1;
}

#if PYPRUNE_SSE2
// N:4 along the last axis for float32, one group per 128-bit lane: each key is compared with the
// other three of its group through in-lane rotations. `better` counts keys that are larger, or equal
// at a lower position; the key is kept when fewer than n are better. Rotation r brings position
// (j + r) % 4 to lane j; tie_r marks the lanes where that position is lower. The loops below return
// whether a NaN/Inf was seen.
inline __m128i n4_keep(__m128i k, __m128i n_neg) {
  const __m128i r1 = _mm_shuffle_epi32(k, _MM_SHUFFLE(0, 3, 2, 1));
  const __m128i r2 = _mm_shuffle_epi32(k, _MM_SHUFFLE(1, 0, 3, 2));
  const __m128i r3 = _mm_shuffle_epi32(k, _MM_SHUFFLE(2, 1, 0, 3));
  const __m128i tie1 = _mm_set_epi32(-1, 0, 0, 0), tie2 = _mm_set_epi32(-1, -1, 0, 0), tie3 = _mm_set_epi32(-1, -1, -1, 0);
  const __m128i b1 = _mm_or_si128(_mm_cmpgt_epi32(r1, k), _mm_and_si128(_mm_cmpeq_epi32(r1, k), tie1));
  const __m128i b2 = _mm_or_si128(_mm_cmpgt_epi32(r2, k), _mm_and_si128(_mm_cmpeq_epi32(r2, k), tie2));
  const __m128i b3 = _mm_or_si128(_mm_cmpgt_epi32(r3, k), _mm_and_si128(_mm_cmpeq_epi32(r3, k), tie3));
  // Each b is -1 where better: the sum is minus the count; keep where count < n, i.e. sum > -n.
  return _mm_cmpgt_epi32(_mm_add_epi32(_mm_add_epi32(b1, b2), b3), n_neg);
}

template <bool Mag>
bool n4_last_axis_sse2(const float* src, std::uint8_t* out, std::size_t& g, std::size_t end, int n) {
  const __m128i n_neg = _mm_set1_epi32(-n), one = _mm_set1_epi8(1), worst = _mm_set1_epi32(0x7FFFFFFF);
  __m128i nonfinite = _mm_setzero_si128();
  for (; g + 4 <= end; g += 4) {  // four groups = 16 elements = 16 mask bytes
    const float* p = src + 4 * g;
    __m128i keep[4];
    for (int v = 0; v < 4; ++v) {
      const __m128i k = signed_keys_f32<Mag>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 4 * v)));
      nonfinite = _mm_or_si128(nonfinite, _mm_cmpeq_epi32(k, worst));
      keep[v] = n4_keep(k, n_neg);
    }
    const __m128i bytes = _mm_packs_epi16(_mm_packs_epi32(keep[0], keep[1]), _mm_packs_epi32(keep[2], keep[3]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * g), _mm_and_si128(bytes, one));
  }
  return _mm_movemask_epi8(nonfinite) != 0;
}
#endif

#if PYPRUNE_AVX2
template <bool Mag>
PYPRUNE_TARGET_AVX2 bool n4_last_axis_avx2(const float* src, std::uint8_t* out, std::size_t& g, std::size_t end,
                                           int n) {
  const __m256i n_neg = _mm256_set1_epi32(-n), one = _mm256_set1_epi8(1), worst = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i tie1 = _mm256_set_epi32(-1, 0, 0, 0, -1, 0, 0, 0);
  const __m256i tie2 = _mm256_set_epi32(-1, -1, 0, 0, -1, -1, 0, 0);
  const __m256i tie3 = _mm256_set_epi32(-1, -1, -1, 0, -1, -1, -1, 0);
  // packs works within 128-bit lanes: this puts the eight 4-byte groups back in order.
  const __m256i order = _mm256_set_epi32(7, 3, 6, 2, 5, 1, 4, 0);
  __m256i nonfinite = _mm256_setzero_si256();
  for (; g + 8 <= end; g += 8) {  // eight groups = 32 elements = 32 mask bytes
    const float* p = src + 4 * g;
    __m256i keep[4];
    for (int v = 0; v < 4; ++v) {
      const __m256i k = signed_keys_f32_avx2<Mag>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8 * v)));
      nonfinite = _mm256_or_si256(nonfinite, _mm256_cmpeq_epi32(k, worst));
      const __m256i r1 = _mm256_shuffle_epi32(k, _MM_SHUFFLE(0, 3, 2, 1));
      const __m256i r2 = _mm256_shuffle_epi32(k, _MM_SHUFFLE(1, 0, 3, 2));
      const __m256i r3 = _mm256_shuffle_epi32(k, _MM_SHUFFLE(2, 1, 0, 3));
      const __m256i b1 = _mm256_or_si256(_mm256_cmpgt_epi32(r1, k), _mm256_and_si256(_mm256_cmpeq_epi32(r1, k), tie1));
      const __m256i b2 = _mm256_or_si256(_mm256_cmpgt_epi32(r2, k), _mm256_and_si256(_mm256_cmpeq_epi32(r2, k), tie2));
      const __m256i b3 = _mm256_or_si256(_mm256_cmpgt_epi32(r3, k), _mm256_and_si256(_mm256_cmpeq_epi32(r3, k), tie3));
      keep[v] = _mm256_cmpgt_epi32(_mm256_add_epi32(_mm256_add_epi32(b1, b2), b3), n_neg);
    }
    const __m256i bytes =
        _mm256_packs_epi16(_mm256_packs_epi32(keep[0], keep[1]), _mm256_packs_epi32(keep[2], keep[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 4 * g),
                        _mm256_and_si256(_mm256_permutevar8x32_epi32(bytes, order), one));
  }
  return !_mm256_testz_si256(nonfinite, nonfinite);
}
#endif

// N:4 along an inner axis: the four keys of a group sit in four rows (stride `inner`), so columns
// are compared lane by lane. c_ab (a < b) is -1 where k_b > k_a strictly; the count of better keys of
// row j is j + sum_{a<j} c_aj - sum_{b>j} c_jb, and row j keeps a column when that count is below n.
#if PYPRUNE_SSE2
template <bool Mag>
bool n4_inner_sse2(const float* p, std::uint8_t* out, std::size_t inner, std::size_t& i, int n) {
  const __m128i worst = _mm_set1_epi32(0x7FFFFFFF);
  __m128i nonfinite = _mm_setzero_si128();
  for (; i + 4 <= inner; i += 4) {
    __m128i k[4];
    for (int j = 0; j < 4; ++j) {
      k[j] = signed_keys_f32<Mag>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j * inner + i)));
      nonfinite = _mm_or_si128(nonfinite, _mm_cmpeq_epi32(k[j], worst));
    }
    const __m128i c01 = _mm_cmpgt_epi32(k[1], k[0]), c02 = _mm_cmpgt_epi32(k[2], k[0]);
    const __m128i c03 = _mm_cmpgt_epi32(k[3], k[0]), c12 = _mm_cmpgt_epi32(k[2], k[1]);
    const __m128i c13 = _mm_cmpgt_epi32(k[3], k[1]), c23 = _mm_cmpgt_epi32(k[3], k[2]);
    const __m128i zero = _mm_setzero_si128();
    const __m128i x0 = _mm_sub_epi32(zero, _mm_add_epi32(_mm_add_epi32(c01, c02), c03));
    const __m128i x1 = _mm_sub_epi32(c01, _mm_add_epi32(c12, c13));
    const __m128i x2 = _mm_sub_epi32(_mm_add_epi32(c02, c12), c23);
    const __m128i x3 = _mm_add_epi32(_mm_add_epi32(c03, c13), c23);
    const __m128i keep0 = _mm_cmpgt_epi32(_mm_set1_epi32(n), x0), keep1 = _mm_cmpgt_epi32(_mm_set1_epi32(n - 1), x1);
    const __m128i keep2 = _mm_cmpgt_epi32(_mm_set1_epi32(n - 2), x2), keep3 = _mm_cmpgt_epi32(_mm_set1_epi32(n - 3), x3);
    const __m128i bytes = _mm_and_si128(
        _mm_packs_epi16(_mm_packs_epi32(keep0, keep1), _mm_packs_epi32(keep2, keep3)), _mm_set1_epi8(1));
    alignas(16) std::uint8_t rows[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(rows), bytes);
    for (int j = 0; j < 4; ++j) std::memcpy(out + j * inner + i, rows + 4 * j, 4);
  }
  return _mm_movemask_epi8(nonfinite) != 0;
}
#endif

#if PYPRUNE_AVX2
template <bool Mag>
PYPRUNE_TARGET_AVX2 bool n4_inner_avx2(const float* p, std::uint8_t* out, std::size_t inner, std::size_t& i, int n) {
  const __m256i worst = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i order = _mm256_set_epi32(7, 3, 6, 2, 5, 1, 4, 0);
  __m256i nonfinite = _mm256_setzero_si256();
  for (; i + 8 <= inner; i += 8) {
    __m256i k[4];
    for (int j = 0; j < 4; ++j) {
      k[j] = signed_keys_f32_avx2<Mag>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + j * inner + i)));
      nonfinite = _mm256_or_si256(nonfinite, _mm256_cmpeq_epi32(k[j], worst));
    }
    const __m256i c01 = _mm256_cmpgt_epi32(k[1], k[0]), c02 = _mm256_cmpgt_epi32(k[2], k[0]);
    const __m256i c03 = _mm256_cmpgt_epi32(k[3], k[0]), c12 = _mm256_cmpgt_epi32(k[2], k[1]);
    const __m256i c13 = _mm256_cmpgt_epi32(k[3], k[1]), c23 = _mm256_cmpgt_epi32(k[3], k[2]);
    const __m256i x0 = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_add_epi32(_mm256_add_epi32(c01, c02), c03));
    const __m256i x1 = _mm256_sub_epi32(c01, _mm256_add_epi32(c12, c13));
    const __m256i x2 = _mm256_sub_epi32(_mm256_add_epi32(c02, c12), c23);
    const __m256i x3 = _mm256_add_epi32(_mm256_add_epi32(c03, c13), c23);
    const __m256i keep0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), x0);
    const __m256i keep1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 1), x1);
    const __m256i keep2 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 2), x2);
    const __m256i keep3 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 3), x3);
    // packs works within 128-bit lanes; the permute makes each row's eight bytes contiguous.
    const __m256i packed =
        _mm256_packs_epi16(_mm256_packs_epi32(keep0, keep1), _mm256_packs_epi32(keep2, keep3));
    const __m256i bytes = _mm256_and_si256(_mm256_permutevar8x32_epi32(packed, order), _mm256_set1_epi8(1));
    alignas(32) std::uint8_t rows[32];
    _mm256_store_si256(reinterpret_cast<__m256i*>(rows), bytes);
    for (int j = 0; j < 4; ++j) std::memcpy(out + j * inner + i, rows + 8 * j, 8);
  }
  return !_mm256_testz_si256(nonfinite, nonfinite);
}
#endif

// N:M with m known at compile time (2, 4, 8, 16): the rank test unrolls fully.
template <int M, class K, bool Mag, class S>
void nm_fixed(const S* p, const AxisSplit& s, int n, bool allow, int threads, std::uint8_t* keep) {
  const std::size_t blocks = s.outer * (s.dim / M);
  parallel_for(blocks, threads, [&, p, n, keep](std::size_t b, std::size_t e) {
    // Locals, not captures: stores through the uint8 mask may alias anything the lambda references.
    const std::size_t inner = s.inner;
    const S* src = p;
    std::uint8_t* out = keep;
    const int nkeep = n;
    // Once per chunk: the inner-axis loop below would otherwise ask once per block of 4 * inner.
    [[maybe_unused]] const bool avx2 = has_avx2();
    bool bad = false;
    if (inner == 1) {
      // Groups are contiguous (N:M along the last axis): one flat loop, no column loop.
      std::size_t blk = b;
#if PYPRUNE_SSE2
      if constexpr (M == 4 && std::is_same_v<S, float> && std::is_same_v<K, std::uint32_t>) {
#if PYPRUNE_AVX2
        if (avx2) bad |= n4_last_axis_avx2<Mag>(src, out, blk, e, nkeep);
#endif
        bad |= n4_last_axis_sse2<Mag>(src, out, blk, e, nkeep);
      }
#endif
      for (; blk < e; ++blk) {
        const S* g = src + blk * M;
        std::uint8_t* o = out + blk * M;
        K keys[M];
        K worst = 0;
        for (int j = 0; j < M; ++j) {
          keys[j] = key_of<K, Mag>(g[j]);
          worst |= static_cast<K>(keys[j] == static_cast<K>(~K(0)));
        }
        bad |= worst != 0;
        for (int j = 0; j < M; ++j) {
          int better = 0;
          for (int l = 0; l < M; ++l) better += (keys[l] > keys[j]) | ((keys[l] == keys[j]) & (l < j));
          o[j] = better < nkeep;
        }
      }
      if (bad && !allow) throw_nonfinite("w");
      return;
    }
    for (std::size_t blk = b; blk < e; ++blk) {
      const std::size_t base = blk * M * inner;
      std::size_t i = 0;
#if PYPRUNE_SSE2
      if constexpr (M == 4 && std::is_same_v<S, float> && std::is_same_v<K, std::uint32_t>) {
#if PYPRUNE_AVX2
        if (avx2) bad |= n4_inner_avx2<Mag>(src + base, out + base, inner, i, nkeep);
#endif
        bad |= n4_inner_sse2<Mag>(src + base, out + base, inner, i, nkeep);
      }
#endif
      for (; i < inner; ++i) {
        K keys[M];
        for (int j = 0; j < M; ++j) {
          keys[j] = key_of<K, Mag>(src[base + j * inner + i]);
          bad |= keys[j] == static_cast<K>(~K(0));
        }
        for (int j = 0; j < M; ++j) {
          int better = 0;
          for (int l = 0; l < M; ++l) better += (keys[l] > keys[j]) | ((keys[l] == keys[j]) & (l < j));
          out[base + j * inner + i] = better < nkeep;
        }
      }
    }
    if (bad && !allow) throw_nonfinite("w");
  }, std::max<std::size_t>(1, (1 << 14) / (M * s.inner)));
}

template <class K, bool Mag, class S>
void nm_impl(const S* p, const AxisSplit& s, int n, int m, bool allow, int threads, std::uint8_t* keep) {
  const std::size_t groups_per_row = s.dim / static_cast<std::size_t>(m);
  const std::size_t blocks = s.outer * groups_per_row;  // one block = m consecutive positions x inner
  parallel_for(blocks, threads, [&](std::size_t b, std::size_t e) {
    std::vector<K> keys(static_cast<std::size_t>(m));
    bool bad = false;
    for (std::size_t blk = b; blk < e; ++blk) {
      const std::size_t base = blk * static_cast<std::size_t>(m) * s.inner;
      for (std::size_t i = 0; i < s.inner; ++i) {
        for (int j = 0; j < m; ++j) {
          const K key = key_of<K, Mag>(p[base + j * s.inner + i]);
          bad |= key == static_cast<K>(~K(0));
          keys[j] = key;
        }
        keep_best(keys.data(), n, m, keep + base + i, s.inner);
      }
      if (bad && !allow) throw_nonfinite("w");
    }
  }, std::max<std::size_t>(1, (1 << 14) / (static_cast<std::size_t>(m) * s.inner)));
}

}  // namespace

void nm_mask(const Tensor& w, int n, int m, int axis, bool magnitude, bool allow_nonfinite, int threads,
             std::uint8_t* keep) {
  if (m < 1 || n < 0 || n > m)
    throw std::invalid_argument("need 0 <= n <= m and m >= 1, got n=" + std::to_string(n) + ", m=" + std::to_string(m));
  const AxisSplit s = split_at(w.shape, axis);
  if (s.dim % static_cast<std::size_t>(m))
    throw std::invalid_argument("m=" + std::to_string(m) + " does not divide the axis size " + std::to_string(s.dim));
  // Nothing to mask; an empty extent after the axis would also divide by zero in the chunk sizes.
  if (w.size() == 0) return;
  typed(w, [&](auto p) {
    using S = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
    using K = std::conditional_t<std::is_same_v<S, double>, std::uint64_t, std::uint32_t>;
    auto run = [&](auto mag) {
      constexpr bool Mag = decltype(mag)::value;
      switch (m) {
        case 2: return nm_fixed<2, K, Mag>(p, s, n, allow_nonfinite, threads, keep);
        case 4: return nm_fixed<4, K, Mag>(p, s, n, allow_nonfinite, threads, keep);
        case 8: return nm_fixed<8, K, Mag>(p, s, n, allow_nonfinite, threads, keep);
        case 16: return nm_fixed<16, K, Mag>(p, s, n, allow_nonfinite, threads, keep);
        default: return nm_impl<K, Mag>(p, s, n, m, allow_nonfinite, threads, keep);
      }
    };
    if (magnitude)
      run(std::true_type{});
    else
      run(std::false_type{});
  });
}

}  // namespace pyprune
