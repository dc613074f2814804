"""Selection kernels of the C++ core (global k-lowest, lowest slices, N:M, blocks) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyprune import core

FLOATS = [np.float16, np.float32, np.float64]


@st.composite
def score_arrays(draw, dtype=None, max_rank=5, max_side=5):
    """Arrays with many ties (small integers, signed zeros) or general floats; maybe non-contiguous."""
    dtype = dtype or draw(st.sampled_from(FLOATS))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_rank, min_side=1, max_side=max_side))
    if draw(st.booleans()):
        values = st.sampled_from([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 3.0])
    else:
        values = st.floats(-1e3, 1e3, width=16 if dtype == np.float16 else 32)
    if draw(st.booleans()):
        big = draw(hnp.arrays(dtype, shape[:-1] + (2 * shape[-1],), elements=values))
        return big[..., 1::2]
    return draw(hnp.arrays(dtype, shape, elements=values))


def reference_selection(arrays, k, magnitude=False):
    """Stable sort of the concatenation = ties in list order, then flat order."""
    flat = [np.abs(a.astype(np.float64)).ravel() if magnitude else a.astype(np.float64).ravel() for a in arrays]
    cat = np.concatenate(flat)
    order = np.argsort(cat, kind="stable")[:k]
    selected = np.zeros(cat.size, dtype=bool)
    selected[order] = True
    threshold = cat[order[-1]] if k else -np.inf
    masks, ties, start = [], [], 0
    for a in arrays:
        s = selected[start : start + a.size]
        masks.append(s.reshape(a.shape))
        ties.append(int((s & (cat[start : start + a.size] == threshold)).sum()))
        start += a.size
    return threshold, masks, ties


@settings(max_examples=100, deadline=None)
@given(data=st.data(), threads=st.sampled_from([1, 2]))
def test_global_threshold_and_masks_match_stable_sort(data, threads):
    arrays = data.draw(st.lists(score_arrays(), min_size=1, max_size=4))
    total = sum(a.size for a in arrays)
    k = data.draw(st.integers(0, total))
    threshold, masks, ties = reference_selection(arrays, k)
    result = core.global_select(arrays, k, threads=threads)
    assert result.k == k
    assert result.threshold == threshold
    assert result.counts == [int(m.sum()) for m in masks]
    assert result.ties == ties
    keep = core.global_masks(arrays, k, threads=threads)
    for got, m in zip(keep, masks):
        np.testing.assert_array_equal(got, ~m)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), threads=st.sampled_from([1, 2]), in_place=st.booleans())
def test_prune_global_zeroes_the_k_smallest_magnitudes(data, threads, in_place):
    arrays = data.draw(st.lists(score_arrays(), min_size=1, max_size=4))
    total = sum(a.size for a in arrays)
    k = data.draw(st.integers(0, total))
    _, masks, _ = reference_selection(arrays, k, magnitude=True)
    expected = [np.where(m, np.zeros((), a.dtype), a) for a, m in zip(arrays, masks)]
    originals = [a.copy() for a in arrays]
    out = core.prune_global(arrays, k, in_place=in_place, threads=threads)
    if in_place:
        pruned, counts = arrays, out
    else:
        pruned, counts = out
        for a, o in zip(arrays, originals):
            np.testing.assert_array_equal(a, o)  # inputs untouched
    assert counts == [int(m.sum()) for m in masks]
    for got, exp in zip(pruned, expected):
        assert got.dtype == exp.dtype
        np.testing.assert_array_equal(got, exp)


def test_prune_global_large_list_of_mixed_sizes_and_dtypes():
    rng = np.random.default_rng(3)
    sizes = [5, 70_000, 300, 123_457, 1, 40_000]
    dtypes = [np.float32, np.float32, np.float16, np.float32, np.float64, np.float16]
    arrays = [rng.standard_normal(n).astype(dt) for n, dt in zip(sizes, dtypes)]
    arrays[2][:100] = 0  # exact ties at zero
    for k in [1, 1000, sum(sizes) // 2, sum(sizes) - 1]:
        for threads in (1, 2):
            work = [a.copy() for a in arrays]
            _, masks, _ = reference_selection(arrays, k, magnitude=True)
            counts = core.prune_global(work, k, threads=threads)
            assert counts == [int(m.sum()) for m in masks]
            for w, a, m in zip(work, arrays, masks):
                np.testing.assert_array_equal(w, np.where(m, 0, a).astype(a.dtype))


def test_global_selection_with_many_exact_ties_cuts_in_list_then_flat_order():
    a = np.zeros(200_000, dtype=np.float32)
    b = np.zeros(100_000, dtype=np.float32)
    b[::2] = 1.0
    for threads in (1, 2):
        r = core.global_select([a, b], 220_000, threads=threads)
        assert r.threshold == 0.0 and r.counts == [200_000, 20_000] and r.ties == [200_000, 20_000]
        keep = core.global_masks([a, b], 220_000, threads=threads)
        assert not keep[0].any()
        zeros_of_b = np.flatnonzero(b == 0)
        assert not keep[1][zeros_of_b[:20_000]].any() and keep[1][zeros_of_b[20_000:]].all()
        r = core.global_select([a, b], 150_000, threads=threads)
        assert r.counts == [150_000, 0] and r.ties == [150_000, 0]


def test_prune_global_by_sparsity_and_with_scores():
    rng = np.random.default_rng(4)
    w = [rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal(64).astype(np.float32)]
    counts = core.prune_global([x.copy() for x in w], sparsity=0.25)
    assert sum(counts) == 48
    scores = [np.arange(128, dtype=np.float32).reshape(8, 16), np.full(64, -1.0, dtype=np.float32)]
    work = [x.copy() for x in w]
    counts = core.prune_global(work, 70, scores=scores)
    assert counts == [6, 64]
    assert (work[1] == 0).all() and (work[0].ravel()[:6] == 0).all() and (work[0].ravel()[6:] != 0).all()


def test_prune_global_in_place_on_non_contiguous_views():
    base = np.arange(1, 41, dtype=np.float32).reshape(4, 10)
    view = base[:, ::2]
    counts = core.prune_global([view], 5)
    assert counts == [5]
    assert np.count_nonzero(base[:, ::2] == 0) == 5 and np.count_nonzero(base[:, 1::2] == 0) == 0


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_lowest_slices_match_stable_argsort(data):
    s = data.draw(score_arrays(max_rank=1, max_side=40))
    k = data.draw(st.integers(0, s.size))
    expected = np.sort(np.argsort(s.astype(np.float64), kind="stable")[:k])
    got = core.lowest_slices(s, k)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("n", "k", "round_to", "removed"),
    [(10, 5, 4, 2), (10, 5, 1, 5), (16, 5, 4, 4), (16, 0, 8, 0), (16, 16, 8, 16), (6, 5, 4, 2)],
)
def test_lowest_slices_round_to_keeps_a_multiple(n, k, round_to, removed):
    s = np.arange(n, dtype=np.float32)[::-1].copy()
    got = core.lowest_slices(s, k, round_to=round_to)
    assert len(got) == removed
    np.testing.assert_array_equal(got, np.arange(n - removed, n))


def reference_nm(w, n, m, axis, scores=None):
    x = np.abs(w.astype(np.float64)) if scores is None else scores.astype(np.float64)
    x = np.moveaxis(x, axis, -1)
    g = x.reshape(x.shape[:-1] + (x.shape[-1] // m, m))
    order = np.argsort(-g, axis=-1, kind="stable")
    keep = np.zeros(g.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return np.moveaxis(keep.reshape(x.shape), -1, axis)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), threads=st.sampled_from([1, 2]))
def test_nm_mask_matches_argsort_per_group(data, threads):
    m = data.draw(st.sampled_from([1, 2, 4, 3, 8, 20]))
    n = data.draw(st.integers(0, m))
    dtype = data.draw(st.sampled_from(FLOATS))
    rank = data.draw(st.integers(1, 4))
    axis = data.draw(st.integers(0, rank - 1))
    shape = list(data.draw(hnp.array_shapes(min_dims=rank, max_dims=rank, max_side=3)))
    shape[axis] = m * data.draw(st.integers(1, 3))
    w = data.draw(
        hnp.arrays(dtype, shape, elements=st.sampled_from([-2.0, -1.0, 0.0, 1.0, 2.0, 0.25]))
        | hnp.arrays(dtype, shape, elements=st.floats(-10, 10, width=16))
    )
    if data.draw(st.booleans()):
        w = np.swapaxes(w, 0, -1)
        axis = {0: w.ndim - 1, w.ndim - 1: 0}.get(axis, axis)
    got = core.nm_mask(w, n, m, axis, threads=threads)
    assert got.dtype == np.bool_ and got.shape == w.shape
    np.testing.assert_array_equal(got, reference_nm(w, n, m, axis))
    use_scores = data.draw(st.booleans())
    if use_scores:
        scores = -w.astype(np.float32)
        np.testing.assert_array_equal(
            core.nm_mask(w, n, m, axis, scores=scores, threads=threads), reference_nm(w, n, m, axis, scores)
        )


def test_two_four_on_matmul_reduction_axis():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 12)).astype(np.float32)
    keep = core.nm_mask(w, 2, 4, axis=0)
    assert (keep.reshape(16, 4, 12).sum(axis=1) == 2).all()
    np.testing.assert_array_equal(keep, reference_nm(w, 2, 4, 0))


def reference_block(w, r, c, k, ord):
    nr, nc = w.shape[0] // r, w.shape[1] // c
    t = np.abs(w.astype(np.float64)).reshape(nr, r, nc, c)
    norms = (t.sum(axis=(1, 3)) if ord == "l1" else np.sqrt((t * t).sum(axis=(1, 3)))).ravel()
    drop = np.argsort(norms, kind="stable")[:k]
    keep = np.ones(nr * nc, dtype=bool)
    keep[drop] = False
    return np.repeat(np.repeat(keep.reshape(nr, nc), r, axis=0), c, axis=1)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_block_mask_matches_numpy(data):
    r, c = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    nr, nc = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    dtype = data.draw(st.sampled_from(FLOATS))
    w = data.draw(hnp.arrays(dtype, (nr * r, nc * c), elements=st.sampled_from([0.0, 1.0, -1.0, 2.5])))
    k = data.draw(st.integers(0, nr * nc))
    ord = data.draw(st.sampled_from(["l1", "l2"]))
    np.testing.assert_array_equal(core.block_mask(w, (r, c), k, ord=ord), reference_block(w, r, c, k, ord))
    frac = k / (nr * nc)
    assert (~core.block_mask(w, (r, c), sparsity=frac, ord=ord)).sum() == round(frac * nr * nc) * r * c


def test_nan_max_never_selects_nonfinite_before_finite():
    a = np.array([np.nan, 1.0, -np.inf, 0.5], dtype=np.float32)
    r = core.global_select([a], 2, nan="max")
    assert r.threshold == 1.0 and r.counts == [2]
    work = a.copy()
    assert core.prune_global([work], 2, nan="max") == [2]
    assert np.isnan(work[0]) and np.isinf(work[2]) and work[1] == 0 and work[3] == 0
    np.testing.assert_array_equal(core.lowest_slices(a, 2, nan="max"), [1, 3])
    np.testing.assert_array_equal(core.nm_mask(a, 2, 4, nan="max"), [True, False, True, False])


@pytest.mark.parametrize("data", ["normal", "ties", "sorted"])
def test_global_selection_on_more_than_a_million_elements(data):
    """Large inputs take the sampled one-pass path (and fall back to exact refinement when it misses)."""
    rng = np.random.default_rng(8)
    n = 1_300_000
    if data == "normal":
        flat = rng.standard_normal(n).astype(np.float32)
    elif data == "ties":
        flat = rng.integers(-3, 4, n).astype(np.float32)
    else:
        flat = np.linspace(-1, 1, n, dtype=np.float32)
    arrays = [flat[:700_001].copy(), flat[700_001:].astype(np.float16), np.ones(3, np.float32)]
    total = sum(a.size for a in arrays)
    for k in [1, 5_000, total // 2, total - 10]:
        threshold, masks, ties = reference_selection(arrays, k, magnitude=True)
        work = [a.copy() for a in arrays]
        counts = core.prune_global(work, k, threads=2)
        assert counts == [int(m.sum()) for m in masks]
        for w, a, m in zip(work, arrays, masks):
            np.testing.assert_array_equal(w, np.where(m, 0, a).astype(a.dtype))
        threshold, masks, ties = reference_selection(arrays, k)
        r = core.global_select(arrays, k, threads=1)
        assert (r.threshold, r.counts, r.ties) == (threshold, [int(m.sum()) for m in masks], ties)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("by", ["magnitude", "scores"])
@pytest.mark.parametrize("axis", [0, 1])
def test_n_of_four_on_long_float32_rows_with_ties_zeros_and_nonfinite(threads, by, axis):
    """Enough groups (or columns) for the vector paths, plus a tail; NaN/Inf rank as the largest keys."""
    rng = np.random.default_rng(11)
    values = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, np.inf, -np.inf, np.nan], np.float32)
    shape = (7, 4 * 19) if axis == 1 else (4 * 5, 23)
    w = rng.choice(values, size=shape).astype(np.float32)
    w[1] = rng.standard_normal(w.shape[1]).astype(np.float32)
    finite = np.where(np.isfinite(w), w, np.inf)
    for n in range(5):
        if by == "magnitude":
            got = core.nm_mask(w, n, 4, axis, nan="max", threads=threads)
            want = reference_nm(finite, n, 4, axis)
        else:
            got = core.nm_mask(w, n, 4, axis, scores=w, nan="max", threads=threads)
            want = reference_nm(w, n, 4, axis, scores=finite)
        np.testing.assert_array_equal(got, want)
        assert (np.moveaxis(got, axis, -1).reshape(-1, 4).sum(axis=-1) == n).all()
    with pytest.raises(ValueError, match="NaN or Inf"):
        core.nm_mask(w, 2, 4, axis, threads=threads)


@pytest.mark.parametrize("k_from_end", [None, 3])
def test_global_prune_on_more_than_a_million_elements_with_signed_zeros_and_nonfinite(k_from_end):
    """The sampled path with nan="max": NaN/Inf are the largest keys, selected only after every finite one."""
    rng = np.random.default_rng(12)
    n = 1_200_003
    flat = rng.standard_normal(n).astype(np.float32)
    flat[rng.choice(n, 1000, replace=False)] = -0.0
    flat[rng.choice(n, 1000, replace=False)] = 0.0
    flat[rng.choice(n, 7, replace=False)] = np.array([np.inf, -np.inf, np.nan, np.inf, np.nan, -np.inf, np.inf])
    arrays = [flat[:600_001].copy(), flat[600_001:].copy()]
    ranked = [np.where(np.isfinite(a), np.abs(a), np.inf) for a in arrays]
    k = n // 3 if k_from_end is None else n - k_from_end
    _, masks, _ = reference_selection(ranked, k)
    for threads in (1, 2):
        work = [a.copy() for a in arrays]
        assert core.prune_global(work, k, nan="max", threads=threads) == [int(m.sum()) for m in masks]
        for w, a, m in zip(work, arrays, masks):
            np.testing.assert_array_equal(w, np.where(m, np.float32(0), a))
        scored = [a.copy() for a in arrays]
        counts = core.prune_global(scored, k, scores=ranked, nan="max", threads=threads)
        assert counts == [int(m.sum()) for m in masks]
        for w, a, m in zip(scored, arrays, masks):
            np.testing.assert_array_equal(w, np.where(m, np.float32(0), a))
