"""Per-channel statistics of intermediate tensors, streamed batch by batch.

The evaluator fetches the chosen tensors as extra outputs of its session; each batch's values are
folded into running float64 sums (Chan et al.'s pairwise update for mean and variance), so memory
stays bounded by one batch whatever the dataset size. The results feed activation-aware
importance: Wanda-style ``|W| * ||X||`` (``l2_norm``), mean activation and APoZ
(``zero_fraction``), and recovery steps (re-estimated normalisation statistics, bias compensation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..graph import MaskPoint

__all__ = ["ChannelStats", "RunningChannelStats", "TensorChoice", "channel_axes"]


@dataclass(frozen=True)
class ChannelStats:
    """Statistics of one tensor per position along ``axis`` (one entry per channel).

    ``count`` is the number of values each channel saw (samples x other positions).
    ``var`` is the population variance; ``l2_norm`` is ``sqrt(sum(x**2))`` over all of them.
    """

    tensor: str
    axis: int
    count: int
    mean: np.ndarray
    var: np.ndarray
    l2_norm: np.ndarray
    mean_abs: np.ndarray
    zero_fraction: np.ndarray


class RunningChannelStats:
    """Accumulates :class:`ChannelStats` over batches of one tensor.

    ``moments_only``: accumulate only what the count, mean, variance and L2 norm need (what
    recovery uses, at about half the cost); ``mean_abs`` and ``zero_fraction`` are then NaN.
    """

    def __init__(self, tensor: str, axis: int, moments_only: bool = False) -> None:
        self.tensor, self.axis = tensor, axis
        self.moments_only = bool(moments_only)
        self._count = 0
        self._mean = self._m2 = self._sumabs = self._zeros = None

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"tensor {self.tensor!r} is a scalar; it has no channel axis")
        axis = self.axis if self.axis >= 0 else self.axis + x.ndim
        if not 0 <= axis < x.ndim:
            raise ValueError(f"tensor {self.tensor!r} has rank {x.ndim}; channel axis {self.axis} is out of range")
        self.axis = axis
        # A (before, channels, after) view needs no copy, and einsum sums float32 in float64
        # without a float64 copy of the batch: this runs once per batch of every recovery pass.
        channels = x.shape[axis]
        view = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), channels, -1)
        n = view.shape[0] * view.shape[2]
        if n == 0:
            return
        # Sums around a per-channel shift near the mean: no cancellation when the mean is large
        # against the spread (a plain sum of squares would lose the variance).
        if not np.issubdtype(view.dtype, np.floating):
            view = view.astype(np.float64)
        shift = view[0, :, 0].astype(np.float64) if self._mean is None else self._mean
        centred = view - shift.astype(view.dtype)[None, :, None]
        offset = np.einsum("ics->c", centred, dtype=np.float64) / n
        mean = np.einsum("ics->c", view, dtype=np.float64) / n
        m2 = np.maximum(np.einsum("ics,ics->c", centred, centred, dtype=np.float64) - n * offset**2, 0.0)
        sumabs = zeros = None
        if not self.moments_only:
            sumabs = np.einsum("ics->c", np.abs(view), dtype=np.float64)
            zeros = np.count_nonzero(view == 0, axis=(0, 2))
        if self._mean is None:
            self._mean, self._m2, self._sumabs, self._zeros = mean, m2, sumabs, zeros
            self._count = n
            return
        if mean.shape != self._mean.shape:
            raise ValueError(
                f"tensor {self.tensor!r}: channel count changed between batches "
                f"({self._mean.shape[0]} -> {mean.shape[0]})"
            )
        total = self._count + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta**2 * (self._count * n / total)
        if not self.moments_only:
            self._sumabs = self._sumabs + sumabs
            self._zeros = self._zeros + zeros
        self._count = total

    def result(self) -> ChannelStats:
        if self._mean is None:
            raise ValueError(f"no values of tensor {self.tensor!r} were seen")
        n = self._count
        missing = np.full_like(self._mean, np.nan)
        return ChannelStats(
            tensor=self.tensor,
            axis=self.axis,
            count=n,
            mean=self._mean.copy(),
            var=self._m2 / n,
            l2_norm=np.sqrt(self._m2 + n * self._mean**2),
            mean_abs=missing if self.moments_only else self._sumabs / n,
            zero_fraction=missing if self.moments_only else self._zeros / n,
        )


TensorChoice = Mapping[str, int] | Iterable[str | MaskPoint | tuple[str, int]]


def channel_axes(tensors: TensorChoice) -> dict[str, int]:
    """``{tensor: channel axis}`` from a mapping, MaskPoints, (name, axis) pairs or bare names
    (axis 1, the channel axis of NCHW tensors)."""
    if isinstance(tensors, Mapping):
        return {str(k): int(v) for k, v in tensors.items()}
    chosen: dict[str, int] = {}
    for item in tensors:
        if isinstance(item, MaskPoint):
            chosen[item.tensor] = int(item.axis)
        elif isinstance(item, str):
            chosen[item] = 1
        else:
            name, axis = item
            chosen[str(name)] = int(axis)
    return chosen
