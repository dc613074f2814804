"""Typing for pyprune's compiled C++ core. Private: call pyprune.core instead.

Array arguments must be C-contiguous float16/float32/float64 (pyprune.core normalises them);
``threads=0`` means the module default. Bad input raises ValueError/TypeError.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

def get_num_threads() -> int: ...
def set_num_threads(threads: int) -> None: ...

# scores
def element_scores(
    w: npt.NDArray[np.floating], square: bool, allow_nonfinite: bool, threads: int
) -> npt.NDArray[np.float32]: ...
def slice_norms(
    w: npt.NDArray[np.floating], axes: Sequence[int], ord: str, allow_nonfinite: bool, threads: int
) -> npt.NDArray[np.float64]: ...
def wanda_scores(
    w: npt.NDArray[np.floating], input_norms: npt.NDArray[np.float32], axis: int, allow_nonfinite: bool, threads: int
) -> npt.NDArray[np.float32]: ...
def fpgm_scores(
    w: npt.NDArray[np.floating], axis: int, allow_nonfinite: bool, threads: int
) -> npt.NDArray[np.float64]: ...
def random_scores(n: int, seed: int, threads: int) -> npt.NDArray[np.float32]: ...

# selection
def global_select(
    scores: Sequence[npt.NDArray[np.floating]], k: int, magnitude: bool, allow_nonfinite: bool, threads: int
) -> tuple[float, list[int], list[int]]: ...
def global_masks(
    scores: Sequence[npt.NDArray[np.floating]], k: int, allow_nonfinite: bool, threads: int
) -> list[npt.NDArray[np.bool_]]: ...
def prune_global(
    weights: Sequence[npt.NDArray[np.floating]],
    scores: Sequence[npt.NDArray[np.floating]] | None,
    k: int,
    allow_nonfinite: bool,
    threads: int,
) -> list[int]: ...
def lowest_slices(scores: npt.NDArray[np.floating], k: int, allow_nonfinite: bool) -> npt.NDArray[np.int64]: ...
def nm_mask(
    w: npt.NDArray[np.floating], n: int, m: int, axis: int, magnitude: bool, allow_nonfinite: bool, threads: int
) -> npt.NDArray[np.bool_]: ...

# masks
def apply_mask(
    w: npt.NDArray[np.floating], mask: npt.NDArray[np.bool_], out: npt.NDArray[np.floating], threads: int
) -> None: ...
def apply_threshold(
    w: npt.NDArray[np.floating], threshold: float, inclusive: bool, out: npt.NDArray[np.floating], threads: int
) -> None: ...
def count_nonzero(w: npt.NDArray[np.floating], threads: int) -> int: ...
def keep_indices(slice_mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]: ...

# removal
def gather(
    w: npt.NDArray[np.generic], kept: Sequence[npt.NDArray[np.int64] | None], threads: int
) -> npt.NDArray[np.generic]: ...

# least squares
def gram_accumulate(
    x: npt.NDArray[np.floating], y: npt.NDArray[np.floating] | None, g: npt.NDArray[np.float64],
    c: npt.NDArray[np.float64] | None, threads: int
) -> None: ...
