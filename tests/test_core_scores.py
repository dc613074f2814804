"""Score kernels of the C++ core against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyprune import core

FLOATS = [np.float16, np.float32, np.float64]


@st.composite
def weights(draw, min_rank=1, max_rank=5, max_side=5):
    """Float16/32/64 arrays of rank 1-5, sometimes a non-contiguous view of a larger array."""
    dtype = draw(st.sampled_from(FLOATS))
    shape = draw(hnp.array_shapes(min_dims=min_rank, max_dims=max_rank, min_side=1, max_side=max_side))
    values = st.floats(-100, 100, width=16 if dtype == np.float16 else 32)
    layout = draw(st.sampled_from(["contiguous", "strided", "transposed"]))
    if layout == "strided":
        big = draw(hnp.arrays(dtype, shape[:-1] + (2 * shape[-1],), elements=values))
        return big[..., ::2]
    a = draw(hnp.arrays(dtype, shape, elements=values))
    if layout == "transposed":
        return a.T
    return a


def kept_axes(draw, ndim):
    return tuple(draw(st.permutations(range(ndim)))[: draw(st.integers(0, ndim))])


@settings(max_examples=60, deadline=None)
@given(w=weights(), kind=st.sampled_from(["abs", "square"]), threads=st.sampled_from([1, 2]))
def test_element_scores_match_numpy(w, kind, threads):
    x = w.astype(np.float64 if w.dtype == np.float64 else np.float32)
    expected = (np.abs(x) if kind == "abs" else x * x).astype(np.float32)
    got = core.element_scores(w, kind, threads=threads)
    assert got.dtype == np.float32 and got.shape == w.shape
    np.testing.assert_array_equal(got, expected)


def reference_slice_norms(w, axes, ord):
    x = np.abs(w.astype(np.float64))
    reduce = tuple(i for i in range(w.ndim) if i not in axes)
    if ord == "l1":
        r = x.sum(axis=reduce)
    elif ord == "l2":
        r = np.sqrt((x * x).sum(axis=reduce))
    elif ord == "linf":
        r = x.max(axis=reduce) if reduce else x
    else:
        r = x.mean(axis=reduce)
    kept_sorted = sorted(axes)
    return np.transpose(r, [kept_sorted.index(a) for a in axes])


@settings(max_examples=120, deadline=None)
@given(data=st.data(), ord=st.sampled_from(["l1", "l2", "linf", "mean"]), threads=st.sampled_from([1, 2]))
def test_slice_norms_match_numpy(data, ord, threads):
    w = data.draw(weights())
    axes = kept_axes(data.draw, w.ndim)
    negative = data.draw(st.booleans())
    asked = tuple(a - w.ndim for a in axes) if negative else axes
    got = core.slice_norms(w, asked, ord, threads=threads)
    assert got.dtype == np.float64
    assert got.shape == tuple(w.shape[a] for a in axes)
    np.testing.assert_allclose(got, reference_slice_norms(w, axes, ord), rtol=1e-10, atol=0)


def test_slice_norms_conv_and_matmul_layouts():
    rng = np.random.default_rng(1)
    conv = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(core.slice_norms(conv, 0), np.abs(conv).sum(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(core.slice_norms(conv, 1, "l2"), np.sqrt((conv**2).sum(axis=(0, 2, 3))), rtol=1e-5)
    matmul = rng.standard_normal((64, 32)).astype(np.float32)
    np.testing.assert_allclose(core.slice_norms(matmul, 1, "linf"), np.abs(matmul).max(axis=0), rtol=0)
    np.testing.assert_allclose(core.slice_norms(matmul, [0], "mean"), np.abs(matmul).mean(axis=1), rtol=1e-6)


def test_slice_norms_large_tensor_uses_many_chunks():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 70_000, 2)).astype(np.float32)
    for axes in [(0,), (2,), (1,), (0, 2)]:
        for threads in (1, 2):
            np.testing.assert_allclose(
                core.slice_norms(w, axes, "l1", threads=threads), reference_slice_norms(w, axes, "l1"), rtol=1e-10
            )


@settings(max_examples=60, deadline=None)
@given(data=st.data(), threads=st.sampled_from([1, 2]))
def test_wanda_scores_match_numpy(data, threads):
    w = data.draw(weights())
    axis = data.draw(st.integers(-w.ndim, w.ndim - 1))
    norms = data.draw(hnp.arrays(np.float32, (w.shape[axis],), elements=st.floats(0, 10, width=32)))
    shape = [1] * w.ndim
    shape[axis] = -1
    expected = np.abs(w.astype(np.float32)) * norms.reshape(shape)
    got = core.wanda_scores(w, norms, axis, threads=threads)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def reference_fpgm(w, axis):
    f = np.moveaxis(w.astype(np.float64), axis, 0).reshape(w.shape[axis], -1)
    return np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)).sum(1)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), threads=st.sampled_from([1, 2]))
def test_fpgm_scores_match_numpy(data, threads):
    w = data.draw(weights(max_rank=4))
    axis = data.draw(st.integers(0, w.ndim - 1))
    got = core.fpgm_scores(w, axis, threads=threads)
    assert got.shape == (w.shape[axis],) and got.dtype == np.float64
    np.testing.assert_allclose(got, reference_fpgm(w, axis), rtol=1e-9, atol=1e-9)


def test_fpgm_ranks_the_median_filter_lowest():
    filters = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]], dtype=np.float32)
    assert int(np.argmin(core.fpgm_scores(filters, 0))) == 0
    assert int(np.argmin(core.fpgm_scores(filters.T.copy(), 1))) == 0


def reference_random(n, seed):
    def mix(z):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    golden = np.uint64(0x9E3779B97F4A7C15)
    base = mix(np.array([seed], dtype=np.uint64) + golden)[0]
    z = mix(base + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * golden)
    return ((z >> np.uint64(40)).astype(np.float64) * 2.0**-24).astype(np.float32)


@pytest.mark.parametrize("threads", [1, 2])
def test_random_scores_are_seeded_uniform_and_thread_independent(threads):
    a = core.random_scores((300, 500), seed=7, threads=threads)
    assert a.shape == (300, 500) and a.dtype == np.float32
    np.testing.assert_array_equal(a.ravel(), reference_random(a.size, 7))
    np.testing.assert_array_equal(a, core.random_scores([300, 500], seed=7, threads=1))
    assert not np.array_equal(a, core.random_scores((300, 500), seed=8))
    assert 0.0 <= a.min() and a.max() < 1.0 and abs(a.mean() - 0.5) < 0.01
    assert core.random_scores(0, seed=1).shape == (0,)


def test_nan_max_scores_nonfinite_as_most_important():
    w = np.array([[1.0, np.nan], [2.0, 3.0], [np.inf, 0.5]], dtype=np.float32)
    assert np.isinf(core.element_scores(w, nan="max")[0, 1])
    np.testing.assert_array_equal(core.slice_norms(w, 0, nan="max"), [np.inf, 5.0, np.inf])
    np.testing.assert_array_equal(core.slice_norms(w, 1, "linf", nan="max"), [np.inf, np.inf])
    s = core.wanda_scores(w, np.ones(2, np.float32), 1, nan="max")
    assert np.isinf(s[0, 1]) and np.isinf(s[2, 0]) and s[1, 1] == 3.0
    f = core.fpgm_scores(w, 0, nan="max")
    assert np.isinf(f[0]) and np.isinf(f[2]) and np.isfinite(f[1]) and f[1] == 0.0


def test_float64_overflow_is_not_reported_as_nan():
    w = np.array([[1e200, 1e200], [1.0, 1.0]])
    np.testing.assert_array_equal(core.slice_norms(w, 0, "l2"), [np.inf, np.sqrt(2.0)])
