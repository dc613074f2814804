"""Typed seam over the C++ pruning core (``pyprune._core``).

Every function takes numpy arrays of float16, float32 or float64 (float16 is computed in float32),
an optional ``threads=`` (``None`` = the module default, all cores unless :func:`set_num_threads`
says otherwise), and raises ``ValueError``/``TypeError`` naming the problem. Names are the C++
kernels' names (``csrc/include/pyprune``).

This module is public API: the building blocks for pruning loops of one's own, each tested
against numpy. The pipeline itself uses the scores (:func:`element_scores`, :func:`slice_norms`,
:func:`wanda_scores`, :func:`fpgm_scores`, :func:`random_scores`), the masks
(:func:`global_masks`, :func:`nm_mask`, :func:`block_mask`, :func:`apply_mask`), :func:`gather`
(physical removal), :func:`count_nonzero` and :func:`set_num_threads`. The rest complete the
set for direct use: :func:`global_select` (the ``k`` lowest scores across tensors, without
masks), :func:`prune_global` (select and zero in one call), :func:`lowest_slices`,
:func:`apply_threshold`, :func:`keep_indices` and :func:`get_num_threads`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _core

__all__ = [
    "SelectResult",
    "apply_mask",
    "apply_threshold",
    "block_mask",
    "count_nonzero",
    "element_scores",
    "fpgm_scores",
    "gather",
    "get_num_threads",
    "global_masks",
    "global_select",
    "gram_accumulate",
    "keep_indices",
    "lowest_slices",
    "nm_mask",
    "prune_global",
    "random_scores",
    "set_num_threads",
    "slice_norms",
    "wanda_scores",
]

NanPolicy = Literal["raise", "max"]
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------------------------
# threads


def get_num_threads() -> int:
    """Threads a kernel uses when called without ``threads=`` (default: all cores)."""
    return _core.get_num_threads()


def set_num_threads(threads: int) -> None:
    """Set the module-wide thread count; ``0`` restores the default (all cores)."""
    _core.set_num_threads(int(threads))


# ---------------------------------------------------------------------------------------------
# input normalisation shared by every kernel


def _threads(threads: int | None) -> int:
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _float_array(w: object, name: str) -> np.ndarray:
    """The array as float16/32/64, C-contiguous (zero-copy when it already is), non-empty."""
    a = np.asarray(w)
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} has unsupported dtype {a.dtype}; expected float16, float32 or float64")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    return np.ascontiguousarray(a)


def _nan_policy(nan: str) -> bool:
    """True when non-finite values count as most important, False when they raise."""
    if nan not in ("raise", "max"):
        raise ValueError(f"nan must be 'raise' or 'max', got {nan!r}")
    return nan == "max"


def _axis(axis: object, ndim: int, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name} {axis} is out of range for a {ndim}-D tensor")
    return int(axis) % ndim


def _count(k: object, total: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {k!r}")
    if k < 0:
        raise ValueError(f"{name} must be >= 0, got {k}")
    if k > total:
        raise ValueError(f"{name}={k} is larger than the number of elements ({total})")
    return int(k)


def _k_or_sparsity(k: int | None, sparsity: float | None, total: int) -> int:
    if (k is None) == (sparsity is None):
        raise ValueError("give exactly one of k and sparsity")
    if k is not None:
        return _count(k, total)
    s = float(sparsity)  # type: ignore[arg-type]
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return int(np.floor(s * total + 0.5))


# ---------------------------------------------------------------------------------------------
# scores


def element_scores(
    w: np.ndarray,
    kind: Literal["abs", "square"] = "abs",
    *,
    nan: NanPolicy = "raise",
    threads: int | None = None,
) -> np.ndarray:
    """Per-element importance ``|w|`` or ``w**2``.

    Args:
        w: weight of any shape ``S`` (float16/32/64).
        kind: ``"abs"`` or ``"square"``.
        nan: ``"raise"`` (NaN/Inf raise ``ValueError``) or ``"max"`` (they score ``+inf``).
    Returns:
        float32 array of shape ``S``.
    """
    if kind not in ("abs", "square"):
        raise ValueError(f"kind must be 'abs' or 'square', got {kind!r}")
    a = _float_array(w, "w")
    return _core.element_scores(a, kind == "square", _nan_policy(nan), _threads(threads))


def slice_norms(
    w: np.ndarray,
    axes: int | Sequence[int],
    ord: Literal["l1", "l2", "linf", "mean"] = "l1",
    *,
    nan: NanPolicy = "raise",
    threads: int | None = None,
) -> np.ndarray:
    """One score per slice of ``w``, indexed by the kept ``axes``, reducing over all other axes.

    ``ord`` is ``"l1"`` (sum |w|), ``"l2"`` (sqrt of sum w²), ``"linf"`` (max |w|) or ``"mean"``
    (mean |w|). Conv ``[O, I, kh, kw]`` with ``axes=0`` -> ``[O]`` (per output channel); MatMul
    ``[K, N]`` with ``axes=1`` -> ``[N]`` (per output column).

    Returns:
        float64 array of shape ``[w.shape[a] for a in axes]`` (kept axes in the order given).
        With ``nan="max"`` a slice holding NaN/Inf scores ``+inf``.
    """
    if ord not in ("l1", "l2", "linf", "mean"):
        raise ValueError(f"ord must be 'l1', 'l2', 'linf' or 'mean', got {ord!r}")
    a = _float_array(w, "w")
    kept = _axes_tuple(axes, a.ndim)
    order = sorted(kept)
    out = _core.slice_norms(a, order, ord, _nan_policy(nan), _threads(threads))
    out = out.reshape([a.shape[ax] for ax in order])  # a 0-D result (no kept axis) stays 0-D
    # The kernel returns the kept axes in increasing order; present them in the order asked for.
    out = np.transpose(out, [order.index(ax) for ax in kept])
    return out if out.flags.c_contiguous else out.copy()


def _axes_tuple(axes: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    if isinstance(axes, (int, np.integer)):
        seq: tuple = (axes,)
    elif isinstance(axes, (tuple, list, np.ndarray)):
        seq = tuple(axes)
    else:
        raise TypeError(f"axes must be an integer axis or a sequence of them, got {axes!r}")
    norm = tuple(_axis(ax, ndim, "axes entry") for ax in seq)
    if len(set(norm)) != len(norm):
        raise ValueError(f"axes {tuple(seq)} repeat an axis")
    return norm


def wanda_scores(
    w: np.ndarray,
    input_norms: np.ndarray,
    axis: int,
    *,
    nan: NanPolicy = "raise",
    threads: int | None = None,
) -> np.ndarray:
    """Activation-aware scores ``|W| * ‖X‖`` (Wanda).

    Args:
        w: weight of shape ``S``.
        input_norms: 1-D, length ``S[axis]``: the norm of each input feature over the data.
        axis: the axis of ``w`` that indexes input features (MatMul ``[K, N]``: 0; Gemm/Conv: 1).
    Returns:
        float32 array of shape ``S``: ``|w| * input_norms`` broadcast along ``axis``.
    """
    a = _float_array(w, "w")
    ax = _axis(axis, a.ndim)
    norms = np.asarray(input_norms)
    if norms.dtype not in _FLOATS:
        raise TypeError(f"input_norms has unsupported dtype {norms.dtype}; expected a float dtype")
    if norms.ndim != 1 or norms.shape[0] != a.shape[ax]:
        raise ValueError(
            f"input_norms has shape {norms.shape} but w has {a.shape[ax]} features along axis {ax} "
            f"(w shape {a.shape})"
        )
    allow = _nan_policy(nan)
    norms32 = np.ascontiguousarray(norms, dtype=np.float32)
    if not allow and not np.isfinite(norms32).all():
        raise ValueError("input_norms contains NaN or Inf; pass nan='max' to treat them as most important")
    return _core.wanda_scores(a, norms32, ax, allow, _threads(threads))


def fpgm_scores(
    w: np.ndarray, axis: int = 0, *, nan: NanPolicy = "raise", threads: int | None = None
) -> np.ndarray:
    """FPGM (geometric median) importance: per filter, the sum of its L2 distances to all others.

    Args:
        w: weight; filter ``i`` is ``w`` indexed by ``i`` along ``axis`` (Conv ``[O, I, kh, kw]``, axis 0).
    Returns:
        float64 array of shape ``[w.shape[axis]]``. Filters near the median score low (redundant).
    """
    a = _float_array(w, "w")
    ax = _axis(axis, a.ndim)
    return _core.fpgm_scores(a, ax, _nan_policy(nan), _threads(threads))


def random_scores(
    shape: int | Sequence[int], seed: int, *, threads: int | None = None
) -> np.ndarray:
    """Seeded uniform scores in ``[0, 1)`` of the given shape (float32).

    The value at flat index ``i`` depends only on ``(seed, i)``, so results do not depend on the
    thread count.
    """
    dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in dims):
        raise ValueError(f"shape must be non-negative integers, got {shape!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    n = int(np.prod(dims, dtype=np.int64))
    flat = _core.random_scores(n, int(seed) & 0xFFFFFFFFFFFFFFFF, _threads(threads))
    return flat.reshape(dims)


# ---------------------------------------------------------------------------------------------
# selection


@dataclass(frozen=True)
class SelectResult:
    """The ``k`` lowest scores across a list of arrays.

    Attributes:
        threshold: the largest selected score (``-inf`` when ``k == 0``). Every score below it is
            selected; of the scores equal to it, the first ones in list order, then flat index
            order, are selected until exactly ``k`` are.
        counts: number of selected elements in each array (sums to ``k``).
        ties: of ``counts[i]``, how many equal ``threshold`` (they are the first such elements
            of array ``i`` in flat order).
        k: the number selected.
    """

    threshold: float
    counts: list[int]
    ties: list[int]
    k: int


def _float_list(arrays: Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray):
        raise TypeError(f"{name} must be a list of arrays, not a single array")
    out = [_float_array(a, f"{name}[{i}]") for i, a in enumerate(arrays)]
    if not out:
        raise ValueError(f"{name} is empty (no arrays)")
    return out


def global_select(
    scores_list: Sequence[np.ndarray],
    k: int,
    *,
    nan: NanPolicy = "raise",
    threads: int | None = None,
) -> SelectResult:
    """Select the ``k`` lowest scores across a list of arrays without concatenating them.

    Ties at the threshold are taken in list order, then flat index order, so exactly ``k`` are
    selected. NaN/Inf raise ``ValueError`` unless ``nan="max"`` (then they are never selected
    before any finite score).
    """
    arrays = _float_list(scores_list, "scores_list")
    total = sum(a.size for a in arrays)
    kk = _count(k, total)
    threshold, counts, ties = _core.global_select(arrays, kk, False, _nan_policy(nan), _threads(threads))
    return SelectResult(float(threshold), list(counts), list(ties), kk)


def global_masks(
    scores_list: Sequence[np.ndarray],
    k: int,
    *,
    nan: NanPolicy = "raise",
    threads: int | None = None,
) -> list[np.ndarray]:
    """Keep-masks (``True`` = keep) that drop the ``k`` lowest scores across the list.

    The selection is exactly that of :func:`global_select`. Returns one bool array per input,
    of the same shape.
    """
    arrays = _float_list(scores_list, "scores_list")
    total = sum(a.size for a in arrays)
    kk = _count(k, total)
    return list(_core.global_masks(arrays, kk, _nan_policy(nan), _threads(threads)))


def prune_global(
    weights_list: Sequence[np.ndarray],
    k: int | None = None,
    *,
    sparsity: float | None = None,
    in_place: bool = True,
    scores: Sequence[np.ndarray] | None = None,
    nan: NanPolicy = "raise",
    threads: int | None = None,
) -> list[int] | tuple[list[np.ndarray], list[int]]:
    """Zero the ``k`` lowest-magnitude elements across a list of weights (global magnitude pruning).

    Args:
        weights_list: weights of any shapes (float16/32/64, mixed dtypes allowed).
        k: number of elements to zero, or ``sparsity``: the fraction of all elements to zero.
        in_place: modify the given arrays (they must be writeable) or work on copies.
        scores: optional list of score arrays (same shapes as the weights) used instead of ``|w|``.
    Returns:
        ``counts`` (elements zeroed per weight) when ``in_place``; otherwise ``(pruned, counts)``.
        Ties at the threshold are resolved as in :func:`global_select`.
    """
    if isinstance(weights_list, np.ndarray):
        raise TypeError("weights_list must be a list of arrays, not a single array")
    originals = [np.asarray(w) for w in weights_list]
    arrays = _float_list(originals, "weights_list")
    if in_place:
        for i, w in enumerate(weights_list):
            if not isinstance(w, np.ndarray) or not w.flags.writeable:
                raise ValueError(f"weights_list[{i}] is not a writeable numpy array; use in_place=False")
    else:
        arrays = [a.copy() for a in arrays]
    total = sum(a.size for a in arrays)
    kk = _k_or_sparsity(k, sparsity, total)
    allow = _nan_policy(nan)
    if scores is None:
        counts = _core.prune_global(arrays, None, kk, allow, _threads(threads))
    else:
        score_arrays = _float_list(scores, "scores")
        if len(score_arrays) != len(arrays):
            raise ValueError(f"scores has {len(score_arrays)} arrays but weights_list has {len(arrays)}")
        for i, (s, a) in enumerate(zip(score_arrays, arrays)):
            if s.shape != a.shape:
                raise ValueError(f"scores[{i}] has shape {s.shape} but weights_list[{i}] has {a.shape}")
        counts = _core.prune_global(arrays, score_arrays, kk, allow, _threads(threads))
    counts = list(counts)
    if in_place:
        # Arrays that were not C-contiguous were pruned in a contiguous copy; write them back.
        for orig, a in zip(originals, arrays):
            if orig is not a and not np.may_share_memory(orig, a):
                np.copyto(orig, a)
        return counts
    return arrays, counts


def lowest_slices(
    scores: np.ndarray,
    k: int,
    round_to: int = 1,
    *,
    nan: NanPolicy = "raise",
) -> np.ndarray:
    """Sorted indices (int64) of the ``k`` lowest entries of a 1-D score vector.

    Equal scores are taken lowest index first. With ``round_to > 1`` the number removed is
    reduced (never increased) so that the number kept, ``len(scores) - removed``, is a multiple of
    ``round_to`` (or is all of them): e.g. 10 channels, ``k=5``, ``round_to=4`` -> 2 removed.
    """
    s = _float_array(scores, "scores")
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    n = s.shape[0]
    kk = _count(k, n)
    if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) or round_to < 1:
        raise ValueError(f"round_to must be a positive integer, got {round_to!r}")
    if round_to > 1 and kk > 0:
        kept = -(-(n - kk) // round_to) * round_to
        kk = n - min(n, kept)
    return _core.lowest_slices(s, kk, _nan_policy(nan))


def nm_mask(
    w: np.ndarray,
    n: int,
    m: int,
    axis: int = -1,
    *,
    scores: np.ndarray | None = None,
    nan: NanPolicy = "raise",
    threads: int | None = None,
) -> np.ndarray:
    """N:M keep-mask: in every group of ``m`` consecutive elements along ``axis`` keep the ``n``
    largest ``|w|`` (or ``scores``); equal magnitudes keep the lower position.

    For 2:4 on a MatMul ``[K, N]`` weight use ``axis=0`` (the reduction axis).
    Returns a bool array of ``w.shape`` (``True`` = keep). ``m`` must divide ``w.shape[axis]``.
    """
    a = _float_array(w, "w")
    ax = _axis(axis, a.ndim)
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {v!r}")
    if not 1 <= m or not 0 <= n <= m:
        raise ValueError(f"need 0 <= n <= m and m >= 1, got n={n}, m={m}")
    if a.shape[ax] % m:
        raise ValueError(f"m={m} does not divide w.shape[{ax}]={a.shape[ax]} (w shape {a.shape})")
    src = a
    use_abs = True
    if scores is not None:
        src = _float_array(scores, "scores")
        if src.shape != a.shape:
            raise ValueError(f"scores has shape {src.shape} but w has {a.shape}")
        use_abs = False
    return _core.nm_mask(src, int(n), int(m), ax, use_abs, _nan_policy(nan), _threads(threads))


def block_mask(
    w: np.ndarray,
    block: tuple[int, int],
    k: int | None = None,
    *,
    sparsity: float | None = None,
    ord: Literal["l1", "l2"] = "l2",
    nan: NanPolicy = "raise",
    threads: int | None = None,
) -> np.ndarray:
    """Block keep-mask of a 2-D weight: the ``k`` lowest-norm ``r×c`` blocks become ``False``.

    Args:
        w: 2-D weight ``[R, C]`` with ``r | R`` and ``c | C``.
        block: ``(r, c)``.
        k: blocks to remove, or ``sparsity``: the fraction of blocks to remove.
        ord: block norm, ``"l2"`` or ``"l1"``. Equal norms remove the lower block (row-major) first.
    Returns:
        bool array of ``w.shape``.
    """
    a = _float_array(w, "w")
    if a.ndim != 2:
        raise ValueError(f"block_mask needs a 2-D weight, got shape {a.shape}")
    if ord not in ("l1", "l2"):
        raise ValueError(f"ord must be 'l1' or 'l2', got {ord!r}")
    try:
        r, c = (int(b) for b in block)
    except (TypeError, ValueError):
        raise ValueError(f"block must be a pair of positive integers, got {block!r}") from None
    if r < 1 or c < 1:
        raise ValueError(f"block must be a pair of positive integers, got {block!r}")
    if a.shape[0] % r or a.shape[1] % c:
        raise ValueError(f"block {(r, c)} does not tile w of shape {a.shape}")
    nb_r, nb_c = a.shape[0] // r, a.shape[1] // c
    kk = _k_or_sparsity(k, sparsity, nb_r * nb_c)
    tiles = a.reshape(nb_r, r, nb_c, c)
    norms = slice_norms(tiles, (0, 2), ord, nan=nan, threads=threads)
    drop = lowest_slices(norms.reshape(-1), kk, nan=nan)
    keep = np.ones(nb_r * nb_c, dtype=bool)
    keep[drop] = False
    return np.ascontiguousarray(
        np.broadcast_to(keep.reshape(nb_r, 1, nb_c, 1), tiles.shape).reshape(a.shape)
    )


# ---------------------------------------------------------------------------------------------
# masks


def _target(a: np.ndarray, w: object, out: np.ndarray | None, in_place: bool) -> np.ndarray:
    """Where a masking kernel writes: ``w`` itself, ``out``, or a new array."""
    if in_place and out is not None:
        raise ValueError("give either out= or in_place=True, not both")
    if in_place:
        if not isinstance(w, np.ndarray) or not w.flags.writeable:
            raise ValueError("in_place=True needs a writeable numpy array")
        return w
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != a.shape or out.dtype != a.dtype:
            raise ValueError(
                f"out must be a numpy array of shape {a.shape} and dtype {a.dtype}, got "
                f"{getattr(out, 'shape', None)} {getattr(out, 'dtype', type(out).__name__)}"
            )
        if not out.flags.writeable:
            raise ValueError("out is not writeable")
        return out
    return np.empty_like(a)


def _finish(dst: np.ndarray, contiguous_dst: np.ndarray) -> np.ndarray:
    if contiguous_dst is not dst:
        np.copyto(dst, contiguous_dst)
    return dst


def apply_mask(
    w: np.ndarray,
    mask: np.ndarray,
    *,
    out: np.ndarray | None = None,
    in_place: bool = False,
    threads: int | None = None,
) -> np.ndarray:
    """Zero ``w`` where the bool ``mask`` (same shape, ``True`` = keep) is ``False``.

    Writes into a new array (default), into ``out``, or into ``w`` itself with ``in_place=True``;
    returns the array written.
    """
    a = _float_array(w, "w")
    mk = np.asarray(mask)
    if mk.dtype != np.bool_:
        raise TypeError(f"mask has dtype {mk.dtype}; expected bool")
    if mk.shape != a.shape:
        raise ValueError(f"mask has shape {mk.shape} but w has {a.shape}")
    mk = np.ascontiguousarray(mk)
    dst = _target(a, w, out, in_place)
    cdst = dst if dst.flags.c_contiguous else np.empty_like(a)
    _core.apply_mask(a, mk, cdst, _threads(threads))
    return _finish(dst, cdst)


def apply_threshold(
    w: np.ndarray,
    threshold: float,
    *,
    inclusive: bool = False,
    out: np.ndarray | None = None,
    in_place: bool = False,
    threads: int | None = None,
) -> np.ndarray:
    """Zero the elements with ``|w| < threshold`` (``<=`` with ``inclusive=True``).

    NaN elements are kept. Writes like :func:`apply_mask` and returns the array written.
    """
    a = _float_array(w, "w")
    t = float(threshold)
    if np.isnan(t):
        raise ValueError("threshold is NaN")
    dst = _target(a, w, out, in_place)
    cdst = dst if dst.flags.c_contiguous else np.empty_like(a)
    _core.apply_threshold(a, t, bool(inclusive), cdst, _threads(threads))
    return _finish(dst, cdst)


def count_nonzero(w: np.ndarray, *, threads: int | None = None) -> int:
    """Number of non-zero elements (``-0.0`` counts as zero, NaN as non-zero).

    Zeros are ``w.size - count_nonzero(w)``. Empty arrays count 0.
    """
    a = np.asarray(w)
    if a.dtype not in _FLOATS:
        raise TypeError(f"w has unsupported dtype {a.dtype}; expected float16, float32 or float64")
    if a.size == 0:
        return 0
    return int(_core.count_nonzero(np.ascontiguousarray(a), _threads(threads)))


def keep_indices(slice_mask: np.ndarray) -> np.ndarray:
    """Sorted int64 indices of the ``True`` entries of a 1-D bool slice mask."""
    mk = np.asarray(slice_mask)
    if mk.dtype != np.bool_:
        raise TypeError(f"slice_mask has dtype {mk.dtype}; expected bool")
    if mk.ndim != 1:
        raise ValueError(f"slice_mask must be 1-D, got shape {mk.shape}")
    return _core.keep_indices(np.ascontiguousarray(mk))


# ---------------------------------------------------------------------------------------------
# removal


def gather(
    w: np.ndarray,
    kept: Mapping[int, Sequence[int] | np.ndarray],
    *,
    threads: int | None = None,
) -> np.ndarray:
    """A new compact C-contiguous array holding ``w`` restricted to the kept indices per axis.

    ``gather(w, {0: rows, 1: cols})`` equals ``w[np.ix_(rows, cols)]``; axes not named are kept
    whole. Works for any rank and any fixed-size dtype (weights, biases, int tensors).
    Index arrays are 1-D integers in ``[-w.shape[axis], w.shape[axis])``, used in the order given.
    """
    a = np.asarray(w)
    if a.dtype.hasobject or a.dtype.itemsize not in (1, 2, 4, 8, 16):
        raise TypeError(f"w has unsupported dtype {a.dtype} for gather")
    if a.ndim == 0:
        raise ValueError("w is a scalar (0-D); nothing to gather")
    if not isinstance(kept, Mapping):
        raise TypeError(f"kept must be a mapping {{axis: indices}}, got {type(kept).__name__}")
    index_arrays: list[np.ndarray | None] = [None] * a.ndim
    for axis, idx in kept.items():
        ax = _axis(axis, a.ndim)
        if index_arrays[ax] is not None:
            raise ValueError(f"axis {axis} is given twice in kept")
        ia = np.asarray(idx)
        if ia.size == 0:
            ia = ia.astype(np.int64)
        if ia.ndim != 1 or ia.dtype.kind not in "iu":
            raise ValueError(f"indices for axis {axis} must be a 1-D integer array, got {ia.dtype} {ia.shape}")
        ia = ia.astype(np.int64, copy=False)
        dim = a.shape[ax]
        if ia.size and (ia.min() < -dim or ia.max() >= dim):
            raise ValueError(f"indices for axis {axis} are out of range for size {dim}")
        index_arrays[ax] = np.ascontiguousarray(np.where(ia < 0, ia + dim, ia))
    return _core.gather(np.ascontiguousarray(a), index_arrays, _threads(threads))



# ---------------------------------------------------------------------------------------------
# least squares


def gram_accumulate(
    x: np.ndarray,
    y: np.ndarray | None = None,
    g: np.ndarray | None = None,
    c: np.ndarray | None = None,
    *,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Add ``x.T @ x`` to ``g`` and ``x.T @ y`` to ``c`` (float64), returning ``(g, c)``.

    ``x``: ``(rows, p)``; ``y``: ``(rows, q)`` or None. ``g``/``c``: float64 accumulators of shape
    ``(p, p)``/``(p, q)`` updated in place, or None to start from zeros. Rows are read in place
    (float16/32/64) and summed in float64, so statistics of many batches can be streamed into
    one pair of matrices: the sums a ridge least-squares refit or an OBS update solves with.
    """
    xa = _float_array(x, "x")
    if xa.ndim != 2:
        raise ValueError(f"x must be 2-D (rows, features), got shape {list(xa.shape)}")
    p = xa.shape[1]
    if g is None:
        g = np.zeros((p, p), dtype=np.float64)
    ya = None
    if y is not None:
        ya = _float_array(y, "y")
        if ya.ndim != 2 or ya.shape[0] != xa.shape[0]:
            raise ValueError(f"y must be 2-D with x's {xa.shape[0]} rows, got shape {list(ya.shape)}")
        if c is None:
            c = np.zeros((p, ya.shape[1]), dtype=np.float64)
    _core.gram_accumulate(np.ascontiguousarray(xa), None if ya is None else np.ascontiguousarray(ya), g, c,
                          _threads(threads))
    return g, (c if ya is not None else None)
