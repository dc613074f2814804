"""Layer reconstruction from streamed activation sums: ridge least squares and the OBS update.

After pruning, a linear layer (Conv, Gemm, MatMul) sees fewer or different inputs. Its weights can
be re-fitted so that its output on the calibration data matches the unpruned output, without
training, from two sums streamed batch by batch in the C++ core
(:func:`pyprune.core.gram_accumulate`): ``G = XᵀX`` over the layer's input rows ``X`` (the
im2col patches of a convolution, :func:`conv_rows`) and ``C = XᵀY`` with the unpruned outputs ``Y``.

* :func:`ridge_refit`: whole input channels removed (channel pruning, the ThiNet / "channel
  pruning" family): the kept columns and an intercept solve
  ``(G_KK + λI) W = C_K`` (numpy/LAPACK), ``λ = damp · mean(diag G_KK)``.
* :func:`obs_update`: single weights removed (unstructured or N:M): the OBS / SparseGPT
  column-by-column update. Columns are visited in order; each removed weight's error is spread
  over the later columns of its row through the Cholesky factor of ``(G + λI)⁻¹``, in blocks of
  ``block_size`` columns (lazy batch updates).
* :func:`spanned_fraction`: how many of a layer's input directions the data pins down (the
  ridge's effective degrees of freedom over the columns), for choosing what a refit pulls toward.
"""

from __future__ import annotations

import numpy as np

__all__ = ["conv_rows", "ridge_refit", "obs_update", "conv_output_rows", "spanned_fraction"]


def conv_rows(x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...], pads: tuple[int, ...],
              dilations: tuple[int, ...], select: np.ndarray | None = None) -> np.ndarray:
    """im2col of an NC... input: one row per (sample, output position), columns ordered as a Conv
    weight's ``(C, k1, k2, ...)`` flattening; ``pads`` as ONNX gives them (begins, then ends).
    ``select``: only these rows (indices into the ``N x positions`` rows), gathered without
    building the others."""
    spatial = len(kernel)
    width = [(pads[i], pads[i + spatial]) for i in range(spatial)]
    padded = np.pad(x, [(0, 0), (0, 0), *width])
    windows = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    view = np.lib.stride_tricks.sliding_window_view(padded, windows, axis=tuple(range(2, 2 + spatial)))
    # view: (N, C, out positions..., window...) -> take every stride-th position, dilated taps
    index = (slice(None), slice(None), *(slice(None, None, s) for s in strides),
             *(slice(None, None, d) for d in dilations))
    view = view[index]
    n, c = view.shape[:2]
    positions = view.shape[2 : 2 + spatial]
    if select is not None:
        where = np.unravel_index(np.asarray(select, dtype=np.int64), (n, *positions))
        gather: tuple = (where[0], slice(None), *where[1:])
        picked = view[gather]  # (rows, C, window...)
        return np.ascontiguousarray(picked.reshape(len(where[0]), c * int(np.prod(kernel))))
    order = (0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial))
    rows = view.transpose(order).reshape(n * int(np.prod(positions)), c * int(np.prod(kernel)))
    return np.ascontiguousarray(rows)


def conv_output_rows(y: np.ndarray) -> np.ndarray:
    """A Conv output ``(N, C, positions...)`` as rows ``(N * positions, C)``, matching
    :func:`conv_rows`."""
    return np.ascontiguousarray(np.moveaxis(y, 1, -1).reshape(-1, y.shape[1]))


def _ridge(gram: np.ndarray, damp: float, intercept: bool) -> tuple[np.ndarray, float]:
    """``gram`` with the ridge added to its feature diagonal, and that ridge ``λ``."""
    a = gram.copy()
    features = a.shape[0] - (1 if intercept else 0)
    diag = np.diag(a)[:features]
    lam = max(damp * float(np.mean(diag)) if features and np.mean(diag) > 0 else damp, 1e-12)
    a[np.arange(features), np.arange(features)] += lam
    if intercept:
        a[-1, -1] += 1e-12 * max(float(a[-1, -1]), 1.0)
    return a, lam


def _spd_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a x = b`` for the (ridge-damped, so positive definite) normal equations.

    LAPACK's LU solve (``gesv``, via numpy): numpy has no triangular solve, so a Cholesky factor
    would need two more full solves, three times the work (measured: 38 ms per Cholesky and 2 x
    13 ms per solve on a 1025-column layer, against about 13 ms for one LU solve). A singular
    system (no damping, a dead input) falls back to the least-norm solution."""
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, b, rcond=None)[0]


def ridge_refit(gram: np.ndarray, cross: np.ndarray, keep: np.ndarray, damp: float = 0.01,
                intercept: bool = True, prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights over the kept input columns (and an intercept) that best reproduce the targets.

    ``gram``/``cross``: ``XᵀX`` and ``XᵀY`` over all ``p`` input columns, with a last column of
    ones appended when ``intercept`` (so ``gram`` is ``(p + 1, p + 1)``). ``keep``: bool over the
    ``p`` columns. Returns ``(w, b)``: ``w`` is ``(p, q)`` with zero rows for removed columns,
    ``b`` the ``q`` intercepts (zeros without ``intercept``). ``damp``: ridge strength relative to
    the mean diagonal of the kept part of ``gram``. ``prior``: ``(p, q)`` weights the ridge pulls
    toward instead of zero (``min ‖XW - Y‖² + λ‖W - prior‖²``; the intercept is not pulled).
    """
    keep = np.asarray(keep, dtype=bool)
    p = keep.size
    cols = np.flatnonzero(keep)
    if intercept:
        cols = np.append(cols, p)
    a, lam = _ridge(gram[np.ix_(cols, cols)], damp, intercept)
    b = cross[cols]
    if prior is not None:
        b = b.copy()
        b[:keep.sum()] += lam * prior[keep]
    solved = _spd_solve(a, b)
    w = np.zeros((p, cross.shape[1]), dtype=np.float64)
    if intercept:
        w[cols[:-1]] = solved[:-1]
        return w, solved[-1]
    w[cols] = solved
    return w, np.zeros(cross.shape[1])


def spanned_fraction(gram: np.ndarray, damp: float = 0.01) -> float:
    """The share of the input columns the data behind ``gram`` pins down under a ridge ``damp``.

    ``gram``: ``XᵀX`` with a last column of ones appended (as for :func:`ridge_refit` with an
    intercept). The inputs are centred (the intercept takes their means) and the ridge's effective
    degrees of freedom ``Σ e / (e + λ)`` over the eigenvalues ``e`` of their Gram matrix,
    ``λ = damp · mean(diag XᵀX)``, are divided by the number of columns: near 1 when the rows
    vary in every direction, near 0 when they lie close to a few directions (however many rows
    there are). Costs about one ridge solve (0.3 s at 2048 columns here)."""
    features = gram.shape[0] - 1
    if features <= 0 or gram[-1, -1] <= 0:
        return 0.0
    sums = gram[-1, :-1]
    centred = gram[:-1, :-1] - np.outer(sums, sums) / gram[-1, -1]
    lam = _ridge(gram, damp, True)[1]  # the ridge a refit from these sums adds
    eigen = np.clip(np.linalg.eigvalsh(centred), 0.0, None)
    return float(np.sum(eigen / (eigen + lam))) / features


def obs_update(w: np.ndarray, keep: np.ndarray, gram: np.ndarray, damp: float = 0.01,
               block_size: int = 128) -> np.ndarray:
    """OBS / SparseGPT reconstruction of a pruned weight (rows = outputs, columns = inputs).

    ``w``: ``(q, p)``, ``keep``: bool of the same shape (False = removed), ``gram``: ``XᵀX``
    ``(p, p)`` of the layer's input. Columns are processed left to right; every removed weight
    is zeroed and its error ``w / [H⁻¹]_jj`` moves the row's not yet processed weights along
    row ``j`` of the upper Cholesky factor of ``H⁻¹``, ``H = G + λI``, ``λ = damp ·
    mean(diag G)``. Kept weights absorb the error, removed ones stay zero. Returns the new ``w``.
    """
    w = np.array(w, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool)
    if w.shape != keep.shape or gram.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"obs_update: w {w.shape}, keep {keep.shape} and gram {gram.shape} do not fit")
    p = w.shape[1]
    h = _ridge(np.asarray(gram, dtype=np.float64), damp, False)[0]
    dead = np.diag(gram) <= 0  # an input that is always zero: its weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = np.linalg.inv(h)
    u = np.linalg.cholesky(hinv).T  # upper factor: hinv = uᵀ u; row j is H⁻¹ of columns j.. scaled
    block_size = max(int(block_size), 1)
    for start in range(0, p, block_size):
        end = min(start + block_size, p)
        block = w[:, start:end].copy()
        errors = np.zeros_like(block)
        ub = u[start:end, start:end]
        for j in range(end - start):
            col = block[:, j]
            removed = ~keep[:, start + j]
            err = np.where(removed, col, 0.0) / ub[j, j]
            block[:, j:] -= np.outer(err, ub[j, j:])
            block[removed, j] = 0.0
            errors[:, j] = err
        w[:, start:end] = block
        w[:, end:] -= errors @ u[start:end, end:]  # the block's errors reach the later columns at once
    w[~keep] = 0.0
    return w
