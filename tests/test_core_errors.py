"""Every bad input to the C++ core is a ValueError/TypeError that names the problem."""

from __future__ import annotations

import numpy as np
import pytest

from pyprune import core

W = np.arange(1, 25, dtype=np.float32).reshape(4, 6)


def with_nan():
    w = W.copy()
    w[2, 3] = np.nan
    return w


def with_inf():
    w = W.copy()
    w[0, 0] = -np.inf
    return w


UNSUPPORTED = [np.zeros((4, 6), np.int32), np.zeros((4, 6), np.bool_), np.zeros((4, 6), np.complex64)]


@pytest.mark.parametrize("bad", UNSUPPORTED, ids=lambda a: str(a.dtype))
@pytest.mark.parametrize(
    "call",
    [
        lambda a: core.element_scores(a),
        lambda a: core.slice_norms(a, 0),
        lambda a: core.wanda_scores(a, np.ones(6, np.float32), 1),
        lambda a: core.fpgm_scores(a),
        lambda a: core.global_select([W, a], 3),
        lambda a: core.global_masks([a], 3),
        lambda a: core.prune_global([a], 3),
        lambda a: core.prune_global([W.copy()], 3, scores=[a]),
        lambda a: core.lowest_slices(a[0], 3),
        lambda a: core.nm_mask(a, 2, 3),
        lambda a: core.block_mask(a, (2, 2), 1),
        lambda a: core.apply_mask(a, np.ones((4, 6), bool)),
        lambda a: core.apply_threshold(a, 0.5),
        lambda a: core.count_nonzero(a),
    ],
)
def test_unsupported_dtypes_raise_type_error_naming_the_dtype(call, bad):
    with pytest.raises(TypeError, match=str(bad.dtype)):
        call(bad)


def test_other_type_errors():
    with pytest.raises(TypeError, match="int64"):
        core.wanda_scores(W, np.ones(6, np.int64), 1)
    with pytest.raises(TypeError, match="bool"):
        core.apply_mask(W, np.ones((4, 6), np.float32))
    with pytest.raises(TypeError, match="bool"):
        core.keep_indices(np.array([1, 0]))
    with pytest.raises(TypeError, match="object"):
        core.gather(np.array([None, 1]), {0: [0]})
    with pytest.raises(TypeError, match="list of arrays"):
        core.global_select(W, 3)
    with pytest.raises(TypeError, match="list of arrays"):
        core.prune_global(W, 3)
    with pytest.raises(TypeError, match="axis"):
        core.slice_norms(W, 0.5)
    with pytest.raises(TypeError, match="k must be an integer"):
        core.global_select([W], 2.5)


NONFINITE_CALLS = [
    lambda a: core.element_scores(a),
    lambda a: core.slice_norms(a, 0),
    lambda a: core.slice_norms(a, 1, "linf"),
    lambda a: core.wanda_scores(a, np.ones(6, np.float32), 1),
    lambda a: core.fpgm_scores(a, 1),
    lambda a: core.global_select([W, a], 3),
    lambda a: core.global_select([a], 0),
    lambda a: core.global_masks([a], 3),
    lambda a: core.prune_global([a], 3),
    lambda a: core.prune_global([W.copy()], 3, scores=[a]),
    lambda a: core.lowest_slices(a.ravel(), 3),
    lambda a: core.nm_mask(a, 2, 3),
    lambda a: core.block_mask(a, (2, 2), 1),
]


@pytest.mark.parametrize("make", [with_nan, with_inf], ids=["nan", "inf"])
@pytest.mark.parametrize("call", NONFINITE_CALLS)
def test_nan_and_inf_raise_value_error_saying_so(call, make):
    a = make()
    before = a.copy()
    with pytest.raises(ValueError, match="NaN or Inf"):
        call(a)
    np.testing.assert_array_equal(a, before)  # the input is never modified on error


def test_nonfinite_norms_for_wanda():
    with pytest.raises(ValueError, match="input_norms contains NaN or Inf"):
        core.wanda_scores(W, np.array([1, 2, np.nan, 4, 5, 6], np.float32), 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_an_error_in_a_worker_thread_becomes_a_python_exception(threads):
    big = np.ones(2_000_000, dtype=np.float32)
    big[-3] = np.nan  # lands in the last worker's chunk
    before = big.copy()
    for call in (
        lambda: core.prune_global([big], 10, threads=threads),
        lambda: core.element_scores(big, threads=threads),
        lambda: core.slice_norms(big.reshape(1000, 2000), 1, threads=threads),
        lambda: core.nm_mask(big, 2, 4, threads=threads),
    ):
        with pytest.raises(ValueError, match="NaN or Inf"):
            call()
    np.testing.assert_array_equal(big, before)


@pytest.mark.parametrize(
    "call",
    [
        lambda e: core.element_scores(e),
        lambda e: core.slice_norms(e, 0),
        lambda e: core.fpgm_scores(e),
        lambda e: core.wanda_scores(e, np.ones(0, np.float32), 0),
        lambda e: core.global_select([W, e], 1),
        lambda e: core.prune_global([e], 0),
        lambda e: core.lowest_slices(e, 0),
        lambda e: core.nm_mask(e, 2, 4),
        lambda e: core.apply_mask(e, np.ones(e.shape, bool)),
        lambda e: core.apply_threshold(e, 1.0),
    ],
)
def test_empty_tensors_raise_value_error(call):
    with pytest.raises(ValueError, match="empty"):
        call(np.zeros((0, 4), np.float32) if call is not None else None)


def test_empty_lists_raise_value_error():
    for call in (lambda: core.global_select([], 0), lambda: core.prune_global([], 0), lambda: core.global_masks([], 0)):
        with pytest.raises(ValueError, match="empty"):
            call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: core.slice_norms(W, 2),
        lambda: core.slice_norms(W, (0, -3)),
        lambda: core.wanda_scores(W, np.ones(6, np.float32), 2),
        lambda: core.fpgm_scores(W, -3),
        lambda: core.nm_mask(W, 1, 2, axis=5),
        lambda: core.gather(W, {2: [0]}),
    ],
)
def test_axis_out_of_range(call):
    with pytest.raises(ValueError, match="out of range"):
        call()


def test_repeated_axes():
    with pytest.raises(ValueError, match="repeat"):
        core.slice_norms(W, (1, -1))
    with pytest.raises(ValueError, match="twice"):
        core.gather(W, {1: [0], -1: [1]})


@pytest.mark.parametrize(
    "call",
    [
        lambda: core.global_select([W, W], 49),
        lambda: core.global_masks([W], 25),
        lambda: core.prune_global([W.copy()], 25),
        lambda: core.lowest_slices(np.ones(3, np.float32), 4),
        lambda: core.block_mask(W, (2, 3), 5),
    ],
)
def test_k_larger_than_the_number_of_elements(call):
    with pytest.raises(ValueError, match="larger than"):
        call()


def test_bad_counts_and_fractions():
    with pytest.raises(ValueError, match=">= 0"):
        core.global_select([W], -1)
    with pytest.raises(ValueError, match="exactly one of k and sparsity"):
        core.prune_global([W.copy()], 3, sparsity=0.5)
    with pytest.raises(ValueError, match="exactly one of k and sparsity"):
        core.prune_global([W.copy()])
    with pytest.raises(ValueError, match="sparsity must be in"):
        core.prune_global([W.copy()], sparsity=1.5)
    with pytest.raises(ValueError, match="round_to"):
        core.lowest_slices(np.ones(3, np.float32), 1, round_to=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: core.apply_mask(W, np.ones((6, 4), bool)), "mask has shape"),
        (lambda: core.apply_mask(W, np.ones((4, 6), bool), out=np.zeros((4, 6), np.float64)), "out must be"),
        (lambda: core.apply_threshold(W, 1.0, out=np.zeros((2, 6), np.float32)), "out must be"),
        (lambda: core.wanda_scores(W, np.ones(4, np.float32), 1), "input_norms has shape"),
        (lambda: core.prune_global([W.copy()], 3, scores=[np.ones((6, 4), np.float32)]), "scores\\[0\\] has shape"),
        (lambda: core.prune_global([W.copy()], 3, scores=[W, W]), "scores has 2 arrays"),
        (lambda: core.nm_mask(W, 1, 2, scores=np.ones((2, 2), np.float32)), "scores has shape"),
    ],
)
def test_mismatched_shapes(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_selection_and_mask_arguments():
    with pytest.raises(ValueError, match="does not divide"):
        core.nm_mask(W, 2, 4, axis=1)
    with pytest.raises(ValueError, match="0 <= n <= m"):
        core.nm_mask(W, 3, 2, axis=0)
    with pytest.raises(ValueError, match="does not tile"):
        core.block_mask(W, (3, 3), 1)
    with pytest.raises(ValueError, match="2-D"):
        core.block_mask(W.reshape(2, 2, 6), (1, 1), 1)
    with pytest.raises(ValueError, match="1-D"):
        core.lowest_slices(W, 1)
    with pytest.raises(ValueError, match="1-D"):
        core.keep_indices(np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="nan must be"):
        core.element_scores(W, nan="ignore")
    with pytest.raises(ValueError, match="kind must be"):
        core.element_scores(W, "cube")
    with pytest.raises(ValueError, match="ord must be"):
        core.slice_norms(W, 0, "l3")
    with pytest.raises(ValueError, match="threshold is NaN"):
        core.apply_threshold(W, float("nan"))
    with pytest.raises(ValueError, match="out of range for size 4"):
        core.gather(W, {0: [4]})
    with pytest.raises(ValueError, match="1-D integer"):
        core.gather(W, {0: [[0]]})


def test_writes_need_writeable_arrays():
    ro = W.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        core.prune_global([ro], 3)
    with pytest.raises(ValueError, match="writeable"):
        core.apply_mask(ro, np.ones((4, 6), bool), in_place=True)
    with pytest.raises(ValueError, match="not both"):
        core.apply_mask(W.copy(), np.ones((4, 6), bool), in_place=True, out=W.copy())
    np.testing.assert_array_equal(core.prune_global([ro], 3, in_place=False)[1], [3])


def test_thread_settings():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            core.element_scores(W, threads=bad)
    with pytest.raises(ValueError, match="threads"):
        core.set_num_threads(-1)
    default = core.get_num_threads()
    try:
        core.set_num_threads(1)
        assert core.get_num_threads() == 1
        np.testing.assert_array_equal(core.element_scores(W), np.abs(W))
    finally:
        core.set_num_threads(0)
    assert core.get_num_threads() == default >= 1


def test_stubs_mirror_the_compiled_module():
    import ast
    from pathlib import Path

    import pyprune
    from pyprune import _core

    stub = Path(pyprune.__file__).with_name("_core.pyi")
    declared = {n.name for n in ast.parse(stub.read_text()).body if isinstance(n, ast.FunctionDef)}
    assert declared == {n for n in dir(_core) if not n.startswith("_")}
