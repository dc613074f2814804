"""Mask, count, index and gather kernels of the C++ core against numpy."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyprune import core

FLOATS = [np.float16, np.float32, np.float64]


@st.composite
def weights(draw, dtypes=FLOATS, max_rank=5):
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_rank, min_side=1, max_side=5))
    values = st.sampled_from([0.0, -0.0, 0.5, -1.0, 2.0]) | st.floats(-50, 50, width=16)
    if np.dtype(dtype).kind != "f":
        values = hnp.from_dtype(np.dtype(dtype))
    if draw(st.booleans()):
        big = draw(hnp.arrays(dtype, (2 * shape[0],) + shape[1:], elements=values))
        return big[::2]
    return draw(hnp.arrays(dtype, shape, elements=values))


@settings(max_examples=80, deadline=None)
@given(data=st.data(), threads=st.sampled_from([1, 2]), mode=st.sampled_from(["new", "out", "in_place"]))
def test_apply_mask_matches_numpy(data, threads, mode):
    w = data.draw(weights())
    mask = data.draw(hnp.arrays(np.bool_, w.shape))
    expected = np.where(mask, w, np.zeros((), w.dtype))
    original = w.copy()
    if mode == "new":
        got = core.apply_mask(w, mask, threads=threads)
        np.testing.assert_array_equal(w, original)
    elif mode == "out":
        out = np.full_like(w, 7)
        got = core.apply_mask(w, mask, out=out, threads=threads)
        assert got is out
    else:
        got = core.apply_mask(w, mask, in_place=True, threads=threads)
        assert got is w
    assert got.dtype == w.dtype
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    threads=st.sampled_from([1, 2]),
    inclusive=st.booleans(),
    t=st.sampled_from([0.0, 0.5, 1.0, 2.0, 1e-3, 33.3, -1.0, np.inf]),
)
def test_apply_threshold_matches_numpy(data, threads, inclusive, t):
    w = data.draw(weights())
    mag = np.abs(w.astype(np.float64))
    drop = mag <= t if inclusive else mag < t
    expected = np.where(drop, np.zeros((), w.dtype), w)
    np.testing.assert_array_equal(core.apply_threshold(w, t, inclusive=inclusive, threads=threads), expected)
    work = w.copy()
    core.apply_threshold(work, t, inclusive=inclusive, in_place=True, threads=threads)
    np.testing.assert_array_equal(work, expected)


def test_apply_threshold_keeps_nan_and_reproduces_global_selection():
    w = np.array([np.nan, 0.1, -0.2, 0.3, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(core.apply_threshold(w, 0.25), np.array([np.nan, 0, 0, 0.3, np.inf], np.float32))
    rng = np.random.default_rng(6)
    a = rng.standard_normal(1000).astype(np.float32)
    r = core.global_select([np.abs(a)], 300)
    assert np.count_nonzero(core.apply_threshold(a, r.threshold, inclusive=True)) == 700


@settings(max_examples=60, deadline=None)
@given(w=weights(), threads=st.sampled_from([1, 2]))
def test_count_nonzero_matches_numpy(w, threads):
    assert core.count_nonzero(w, threads=threads) == np.count_nonzero(w)


def test_count_nonzero_large_and_special_values():
    a = np.zeros(300_001, dtype=np.float16)
    a[::7] = 1
    a[1] = -0.0
    a[3] = np.nan
    for threads in (1, 2):
        assert core.count_nonzero(a, threads=threads) == np.count_nonzero(a)
    assert core.count_nonzero(np.zeros((0, 3), np.float32)) == 0


@settings(max_examples=40, deadline=None)
@given(mask=hnp.arrays(np.bool_, st.integers(0, 50)))
def test_keep_indices_match_flatnonzero(mask):
    got = core.keep_indices(mask)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.flatnonzero(mask))


@settings(max_examples=120, deadline=None)
@given(data=st.data(), threads=st.sampled_from([1, 2]))
def test_gather_matches_numpy_take(data, threads):
    w = data.draw(weights(dtypes=FLOATS + [np.int8, np.int64, np.bool_, np.complex128]) | weights())
    axes = data.draw(st.sets(st.integers(0, w.ndim - 1), max_size=w.ndim))
    kept = {}
    expected = w
    for ax in sorted(axes):
        idx = data.draw(st.lists(st.integers(0, w.shape[ax] - 1), max_size=6))
        if data.draw(st.booleans()):
            idx = sorted(set(idx))
        name = ax - w.ndim if data.draw(st.booleans()) else ax
        kept[name] = np.array(idx, dtype=data.draw(st.sampled_from([np.int64, np.int32])))
        expected = np.take(expected, np.array(idx, dtype=np.int64), axis=ax)
    got = core.gather(w, kept, threads=threads)
    assert got.dtype == w.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def test_gather_half_rows_and_columns_of_a_large_matrix():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((600, 700)).astype(np.float32)
    rows = np.sort(rng.choice(600, 300, replace=False))
    cols = np.sort(rng.choice(700, 350, replace=False))
    for threads in (1, 2):
        np.testing.assert_array_equal(core.gather(w, {0: rows, 1: cols}, threads=threads), w[np.ix_(rows, cols)])
        np.testing.assert_array_equal(core.gather(w, {0: rows}, threads=threads), w[rows])
        np.testing.assert_array_equal(core.gather(w, {1: cols}, threads=threads), w[:, cols])
    conv = rng.standard_normal((8, 6, 3, 3)).astype(np.float16)
    np.testing.assert_array_equal(core.gather(conv, {1: [0, 5], 0: [7]}), conv[[7]][:, [0, 5]])
    np.testing.assert_array_equal(core.gather(conv, {}), conv)
    assert core.gather(conv, {0: []}).shape == (0, 6, 3, 3)
    np.testing.assert_array_equal(core.gather(conv, {0: [-1]}), conv[[7]])
