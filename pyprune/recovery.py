"""Recovery after a committed step: re-estimated normalisation statistics and bias compensation.

Removing channels shifts the statistics every later layer was calibrated for. Two per-channel
affine corrections undo most of that without training, and both are fed into the search's one
ONNX Runtime session (``x * scale + shift`` on an edge), so no rebuild is needed:

* **BatchNormalization re-estimation.** The mean and variance of every BatchNormalization input
  are measured on the calibration data under the current masks and compared with the unpruned
  model's on the same data (:meth:`Recovery.calibrate`); the BN's statistics move by that drift, so
  its output keeps the mean and variance it had before pruning.
  On the BN's input edge that is ``scale = sqrt(var + eps) / sqrt(var' + eps)`` and
  ``shift = mean - scale * mean'``; in the shipped model the BN's running mean and variance are
  simply replaced by ``mean'`` and ``var'``.
* **Bias compensation** (where no BatchNormalization follows, e.g. fused exports and dense
  heads): a removed unit's input to a linear consumer (Gemm, MatMul, Conv without padding) is
  replaced by its mean instead of zero, which is the same as folding ``W[:, u] * mean(x_u)`` into
  the consumer's bias; the shipped model gets exactly that bias.

The statistics come from the same session (its captured tensors, streamed batch by batch under
the current masks and corrections), so recovery needs no rebuild either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from .evaluate import ChannelStats
from .graph import Group, MaskPoint, Model, drop_unused
from .surgery import bias_after, fold_input_shift, replace_input

__all__ = ["Recovery"]

_LINEAR = ("Gemm", "MatMul", "Conv")


@dataclass
class _BatchNorm:
    node: str
    point: MaskPoint  # its input edge
    mean: np.ndarray
    var: np.ndarray
    eps: float


@dataclass
class _Compensated:
    """A mask-point edge whose masked positions are fed their mean instead of zero."""

    point: MaskPoint
    owners: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (group id, index)
    missing: int = 0  # parameters a full bias of the consumer adds when a correction is folded


class Recovery:
    """Per-channel corrections of one search (see the module docstring).

    ``batchnorm``/``bias`` switch the two kinds on; with both off the object does nothing.
    """

    def __init__(self, model: Model, groups: Sequence[Group], *, batchnorm: bool = True, bias: bool = True) -> None:
        self.model = model
        self.batchnorms: list[_BatchNorm] = []
        self.compensated: dict[tuple[str, int], _Compensated] = {}
        if batchnorm:
            for node in model.nodes:
                bn = self._batchnorm(node)
                if bn is not None:
                    self.batchnorms.append(bn)
        if bias:
            for g in groups:
                for mp in g.mask_points:
                    if self._compensable(mp):
                        entry = self.compensated.setdefault((mp.node, mp.input_index), _Compensated(
                            mp, missing=self._missing_bias(self.model.node(mp.node))))
                        entry.owners.append((g.id, np.asarray(mp.index)))
        # Current corrections: edge -> (scale, shift); BN node -> (mean', var').
        self.corrections: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self.bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # BN input statistics of the unpruned model on the calibration data (see calibrate()).
        self.unpruned: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- discovery ------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return bool(self.batchnorms or self.compensated)

    def _batchnorm(self, node: onnx.NodeProto) -> _BatchNorm | None:
        if node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx"):
            return None
        if len(node.output) > 1 and any(node.output[1:]):
            return None  # training-mode outputs: leave it alone
        if any(a.name == "training_mode" and a.i for a in node.attribute):
            return None
        if not all(self.model.is_weight(i) for i in node.input[1:5]):
            return None
        rank = self.model.rank(node.input[0])
        mean, var = self.model.weight(node.input[3]), self.model.weight(node.input[4])
        if rank is None or rank < 2 or mean.ndim != 1:
            return None
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        point = MaskPoint(node.name, 0, node.input[0], 1, rank, np.arange(mean.shape[0], dtype=np.int64))
        return _BatchNorm(node.name, point, mean.astype(np.float64), var.astype(np.float64), float(eps))

    def _missing_bias(self, node: onnx.NodeProto) -> int:
        """Parameters folding a correction into ``node`` adds: the part of a full bias (one value
        per output) that it does not have yet."""
        if node.op_type == "MatMul":
            return 0
        w = self.model.weight(node.input[1])
        width = w.shape[0] if node.op_type == "Conv" or _attr(node, "transB", 0) else w.shape[-1]
        given = len(node.input) > 2 and node.input[2] and self.model.is_weight(node.input[2])
        return int(width - (self.model.weight(node.input[2]).size if given else 0))

    def _compensable(self, mp: MaskPoint) -> bool:
        node = self.model.node(mp.node)
        if node.op_type not in _LINEAR or mp.input_index != 0 or len(node.input) < 2:
            return False
        if not self.model.is_weight(node.input[1]):
            return False
        w = self.model.weight(node.input[1])
        # A correction is folded into the consumer's bias: never an extra node. A Conv or Gemm
        # without a full bias gets one (counted by :meth:`added_params`); a MatMul needs the bias
        # Add its exporter wrote after it.
        if node.op_type == "MatMul" and (w.ndim != 2 or mp.axis != mp.rank - 1 or bias_after(self.model, node) is None):
            return False
        if node.op_type == "Gemm" and (mp.rank != 2 or _attr(node, "transA", 0)):
            return False
        if node.op_type == "Conv":
            if _attr(node, "group", 1) != 1 or mp.axis != 1:
                return False
            if any(_attr(node, "pads", [0])) or _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
                return False  # a padded border would see zeros, not the mean: not a bias
        # Where a BatchNormalization follows, its re-estimation already absorbs the shift.
        followers = self.model.consumers(node.output[0])
        return not any(n.op_type == "BatchNormalization" for n, _ in followers)

    # -- session wiring -------------------------------------------------------------------------

    @property
    def affine_points(self) -> list[MaskPoint]:
        """Edges that need fed scale/shift inputs in the search session."""
        return [bn.point for bn in self.batchnorms] + [c.point for c in self.compensated.values()]

    @property
    def capture(self) -> dict[str, int]:
        """Tensors whose per-channel statistics recovery measures: ``{name: channel axis}``."""
        return {p.tensor: p.axis for p in self.affine_points}

    def added_params(self, keeps: Mapping[str, np.ndarray]) -> int:
        """Parameters the shipped model gains from folding bias compensation under the keep masks
        ``keeps`` (group -> keep mask): a full bias for each compensated consumer that lacks one
        and loses an input channel. An upper bound (the consumer's own outputs may be cut too), so
        the search never counts less than it ships."""
        total = 0
        for comp in self.compensated.values():
            if comp.missing and any(gid in keeps and not np.all(np.asarray(keeps[gid])[index[index >= 0]])
                                    for gid, index in comp.owners):
                total += comp.missing
        return total

    # -- estimation -----------------------------------------------------------------------------

    def calibrate(self, stats: Mapping[str, ChannelStats]) -> None:
        """Record the BN input statistics of the unpruned model on the calibration data.

        Re-estimation then corrects only the drift that pruning causes: the unpruned model is
        left exactly as it is even when the calibration data's statistics differ from the
        running statistics (a small or shifted calibration set, synthetic data).
        """
        self.unpruned = {bn.node: (stats[bn.point.tensor].mean, stats[bn.point.tensor].var)
                         for bn in self.batchnorms}

    def update(self, stats: Mapping[str, ChannelStats], keeps: Mapping[str, np.ndarray]) -> float:
        """New corrections from statistics measured under the masks ``keeps`` (group -> keep mask).

        Returns the largest change of any scale/shift (used to stop repeated passes once the
        corrections of later layers have caught up with those of earlier ones).
        """
        change = 0.0
        new: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        for bn in self.batchnorms:
            mean, var = stats[bn.point.tensor].mean, stats[bn.point.tensor].var
            if bn.node in self.unpruned:
                # New running statistics that give the BN's output, on this data, the mean and
                # variance it had unpruned: var' + eps = (var + eps) r^2, mean' = m1 - (m0 - mean) r.
                m0, v0 = self.unpruned[bn.node]
                r = np.sqrt(np.where(v0 > 1e-12, var / np.where(v0 > 1e-12, v0, 1.0), 1.0))
                mean = mean - (m0 - bn.mean) * r
                var = np.maximum((bn.var + bn.eps) * r * r - bn.eps, 0.0)
            scale = np.sqrt(bn.var + bn.eps) / np.sqrt(var + bn.eps)
            shift = bn.mean - scale * mean
            new[(bn.node, 0)] = (scale, shift)
            self.bn_stats[bn.node] = (mean, var)
        for key, comp in self.compensated.items():
            mean = stats[comp.point.tensor].mean
            masked = np.zeros(len(comp.point.index), dtype=bool)
            for gid, index in comp.owners:
                keep = keeps.get(gid)
                if keep is None:
                    continue
                owned = index >= 0
                masked[owned] |= ~np.asarray(keep)[index[owned]]
            scale = np.ones(len(masked))
            shift = np.where(masked, mean, 0.0)
            new[key] = (scale, shift)
        for key, (scale, shift) in new.items():
            old = self.corrections.get(key)
            if old is None:
                change = max(change, float(np.max(np.abs(scale - 1.0), initial=0.0)),
                             float(np.max(np.abs(shift), initial=0.0)))
            else:
                change = max(change, float(np.max(np.abs(scale - old[0]), initial=0.0)),
                             float(np.max(np.abs(shift - old[1]), initial=0.0)))
        self.corrections = new
        return change

    def snapshot(self) -> tuple[dict, dict]:
        return dict(self.corrections), dict(self.bn_stats)

    def restore(self, snap: tuple[dict, dict]) -> None:
        self.corrections, self.bn_stats = dict(snap[0]), dict(snap[1])

    # -- shipping -------------------------------------------------------------------------------

    def fold(self, model: Model, corrections: Mapping[tuple[str, int], tuple[np.ndarray, np.ndarray]] | None = None,
             bn_stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Model:
        """A copy of ``model`` (the unpruned original) with the corrections folded into weights:
        BatchNormalization statistics replaced and compensation added to consumer biases."""
        corrections = self.corrections if corrections is None else corrections
        bn_stats = self.bn_stats if bn_stats is None else bn_stats
        out = model.copy()
        for bn in self.batchnorms:
            if bn.node not in bn_stats or (bn.node, 0) not in corrections:
                continue
            mean, var = bn_stats[bn.node]
            node = out.node(bn.node)
            replace_input(out, node, 3, mean)
            replace_input(out, node, 4, var)
        for key, comp in self.compensated.items():
            if key not in corrections:
                continue
            shift = corrections[key][1]
            if not np.any(shift):
                continue
            fold_input_shift(out, out.node(comp.point.node), comp.point, shift)
        drop_unused(out.proto.graph, nodes=False)  # the statistics and biases that were replaced
        out.refresh()
        return out


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default
