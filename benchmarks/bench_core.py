"""Side-by-side timings of pyprune's C++ core against numpy references.

Every kernel is timed in the same run as its numpy reference on a 64M-element float32 tensor
(global selection: a list of 50 tensors of mixed sizes totalling 64M), next to the time of one
``np.copyto`` of the same bytes, the memory-bandwidth floor. Best of ``--repeat`` runs.

    python benchmarks/bench_core.py            # full size (needs ~3 GB of RAM)
    python benchmarks/bench_core.py --quick    # small sizes, a smoke run
    python benchmarks/bench_core.py --json results.json

The least-squares sums (recovery's ``X^T X`` and ``X^T Y``) are timed on im2col-sized rows
instead (16384 x 577 float32), against numpy's float64 BLAS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from pyprune import core


def best_ms(fn: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None) -> float:
    """Best wall time of fn() over `repeat` runs; setup() runs untimed before each."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def copy_floor_ms(a: np.ndarray, repeat: int) -> float:
    dst = np.empty_like(a)
    return best_ms(lambda: np.copyto(dst, a), repeat)


def mixed_sizes(total: int, count: int, rng: np.random.Generator) -> list[int]:
    """`count` sizes spanning three orders of magnitude that sum to `total`."""
    raw = np.exp(rng.uniform(0, np.log(1000), count))
    sizes = np.maximum(1, (raw / raw.sum() * total).astype(np.int64))
    sizes[-1] += total - sizes.sum()
    return [int(s) for s in sizes]


def numpy_prune_global(ws: list[np.ndarray], k: int) -> None:
    """The numpy way: concatenate magnitudes, np.partition for the k-th, boolean mask per tensor."""
    mags = np.concatenate([np.abs(w).ravel() for w in ws])
    t = np.partition(mags, k - 1)[k - 1]
    for w in ws:
        w[np.abs(w) <= t] = 0  # ties at t may over-prune; the numpy way has no exact tie rule


def numpy_nm_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M along the last axis with an argsort per group of m."""
    g = np.abs(w).reshape(-1, m)
    keep = np.zeros(g.shape, dtype=bool)
    np.put_along_axis(keep, np.argsort(g, axis=1)[:, m - n :], True, axis=1)
    return keep.reshape(w.shape)


def run(quick: bool, repeat: int) -> list[dict[str, float | str]]:
    rng = np.random.default_rng(0)
    side = 1024 if quick else 8192  # side x side float32 = 64M elements at full size
    n = side * side
    w = rng.standard_normal((side, side), dtype=np.float32)
    rows_out = []

    def record(kernel: str, numpy_ms: float, pyprune_ms: float, floor_ms: float) -> None:
        rows_out.append(
            {
                "kernel": kernel,
                "numpy_ms": numpy_ms,
                "pyprune_ms": pyprune_ms,
                "ratio": numpy_ms / pyprune_ms,
                "memcpy_floor_ms": floor_ms,
            }
        )

    floor = copy_floor_ms(w, repeat)

    # Global magnitude pruning to 50% over 50 tensors of mixed sizes (select threshold + mask in place).
    sizes = mixed_sizes(n, 50, rng)
    flat = rng.standard_normal(n, dtype=np.float32)
    originals = np.split(flat, np.cumsum(sizes)[:-1])
    work = [np.empty_like(o) for o in originals]

    def reset() -> None:
        for dst, src in zip(work, originals):
            np.copyto(dst, src)

    k = n // 2
    t_np = best_ms(lambda: numpy_prune_global(work, k), repeat, reset)
    t_pp = best_ms(lambda: core.prune_global(work, k), repeat, reset)
    record("global magnitude prune 50% (50 tensors)", t_np, t_pp, floor)
    t_np = best_ms(lambda: np.partition(np.concatenate([np.abs(x).ravel() for x in originals]), k - 1), repeat)
    t_pp = best_ms(lambda: core.global_select(originals, k), repeat)
    record("global k-th lowest only (50 tensors)", t_np, t_pp, floor)

    # N:M masks.
    t_np = best_ms(lambda: numpy_nm_mask(w, 2, 4), max(1, repeat - 1))
    t_pp = best_ms(lambda: core.nm_mask(w, 2, 4, axis=-1), repeat)
    record("2:4 mask, last axis", t_np, t_pp, floor)
    t_np = best_ms(lambda: numpy_nm_mask(np.ascontiguousarray(w.T), 2, 4).T, max(1, repeat - 1))
    t_pp = best_ms(lambda: core.nm_mask(w, 2, 4, axis=0), repeat)
    record("2:4 mask, axis 0 (MatMul K)", t_np, t_pp, floor)

    # Per-channel norms: rows (Conv/Gemm output channels) and columns (MatMul output features).
    for axis, name in ((0, "rows"), (1, "columns")):
        other = 1 - axis
        t_np = best_ms(lambda: np.abs(w).sum(axis=other), repeat)
        t_pp = best_ms(lambda: core.slice_norms(w, axis, "l1"), repeat)
        record(f"per-channel L1 ({name})", t_np, t_pp, floor)
        t_np = best_ms(lambda: np.sqrt((w * w).sum(axis=other)), repeat)
        t_pp = best_ms(lambda: core.slice_norms(w, axis, "l2"), repeat)
        record(f"per-channel L2 ({name})", t_np, t_pp, floor)

    # Element-wise kernels.
    mask = rng.random((side, side)) < 0.5
    norms = rng.random(side, dtype=np.float32)
    t_np = best_ms(lambda: np.abs(w), repeat)
    t_pp = best_ms(lambda: core.element_scores(w), repeat)
    record("element scores |w|", t_np, t_pp, floor)
    t_np = best_ms(lambda: np.abs(w) * norms[:, None], repeat)
    t_pp = best_ms(lambda: core.wanda_scores(w, norms, 0), repeat)
    record("Wanda scores |W|*||X||", t_np, t_pp, floor)
    t_np = best_ms(lambda: np.where(mask, w, np.float32(0)), repeat)
    t_pp = best_ms(lambda: core.apply_mask(w, mask), repeat)
    record("apply bool mask (new array)", t_np, t_pp, floor)
    t_np = best_ms(lambda: np.where(np.abs(w) < 0.5, np.float32(0), w), repeat)
    t_pp = best_ms(lambda: core.apply_threshold(w, 0.5), repeat)
    record("apply threshold (new array)", t_np, t_pp, floor)
    t_np = best_ms(lambda: np.count_nonzero(w), repeat)
    t_pp = best_ms(lambda: core.count_nonzero(w), repeat)
    record("count non-zeros", t_np, t_pp, floor)

    # Structured removal: half the rows and half the columns; the floor is a copy of the output.
    rows = np.sort(rng.choice(side, side // 2, replace=False))
    cols = np.sort(rng.choice(side, side // 2, replace=False))
    out_floor = copy_floor_ms(np.empty((side // 2, side // 2), np.float32), repeat)
    t_np = best_ms(lambda: w[np.ix_(rows, cols)], repeat)
    t_pp = best_ms(lambda: core.gather(w, {0: rows, 1: cols}), repeat)
    record("gather half rows + half cols", t_np, t_pp, out_floor)

    # Least-squares sums of a recovery refit: X^T X and X^T Y of float32 im2col rows (a 64-channel
    # 3x3 convolution: 576 columns and a constant, 64 targets) summed in float64. numpy: cast to
    # float64, then BLAS (what summing in double takes there); the floor is a copy of X.
    lrows = 2048 if quick else 16384
    x = rng.standard_normal((lrows, 577), dtype=np.float32)
    y = rng.standard_normal((lrows, 64), dtype=np.float32)

    def numpy_gram() -> None:
        x64 = x.astype(np.float64)
        x64.T @ x64, x64.T @ y.astype(np.float64)

    t_np = best_ms(numpy_gram, repeat)
    t_pp = best_ms(lambda: core.gram_accumulate(x, y), repeat)
    record(f"least-squares sums X^T X, X^T Y ({lrows}x577)", t_np, t_pp, copy_floor_ms(x, repeat))
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1M-element tensors instead of 64M (CI smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per timing, best taken (default 5, quick 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    repeat = args.repeat or (2 if args.quick else 5)
    rows = run(args.quick, repeat)
    header = f"{'kernel':<42} {'numpy ms':>10} {'pyprune ms':>11} {'ratio':>8} {'memcpy floor ms':>16}"
    print(f"pyprune core benchmark: {'1M' if args.quick else '64M'} float32 elements, "
          f"{core.get_num_threads()} threads, {os.cpu_count()} cores, numpy {np.__version__}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['kernel']:<42} {r['numpy_ms']:>10.1f} {r['pyprune_ms']:>11.1f} {r['ratio']:>7.1f}x "
            f"{r['memcpy_floor_ms']:>16.1f}"
        )
    if args.json:
        meta = {
            "elements": 1 << 20 if args.quick else 1 << 26,
            "threads": core.get_num_threads(),
            "cores": os.cpu_count(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "repeat": repeat,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
