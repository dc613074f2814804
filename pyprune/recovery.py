"""Recovery after pruning, without training: statistics matching and least-squares reconstruction.

Removing channels, layers or weights shifts what every later layer computes. Recovery corrects
the layers whose input changed, from the calibration data, inside the search's one ONNX Runtime
session (fed inputs: no rebuild) and folds the corrections into weights and biases on shipping
(no extra node). Three modes (``recovery=`` in :class:`~pyprune.options.PruneOptions`,
``--recovery`` on the command line):

* ``"none"``: nothing.
* ``"stats"``: **statistics matching**. Every BatchNormalization whose input changed gets
  re-estimated running statistics (its output keeps the mean and variance it had before pruning),
  and every Conv/ConvTranspose/Gemm/MatMul whose input changed, with no BatchNormalization after
  it (a folded export, a dense head), gets a per-output-channel ``scale`` and ``shift`` so that
  its pre-activation output has, on the calibration data, the mean and variance the unpruned
  model had: what BN re-estimation does once the BN is folded into the Conv. Fed on the layer's
  output (:class:`~pyprune.evaluate.OutputPoint`); shipped folded into its weights and bias.
* ``"lstsq"``: **reconstruction**. A layer that lost input channels gets its kept weights and
  its bias re-fitted so that its output matches the unpruned output on the calibration data
  (ridge least squares from ``XᵀX`` and ``XᵀY`` streamed in the C++ core, see
  :mod:`pyprune.reconstruct`). The ridge pulls the refit toward the layer's own trained weights,
  not toward zero: it moves them only as far as the data supports. How far (``damp``) is chosen
  per layer and per refit, unless fixed: every fourth calibration batch is set aside, the refit
  of the others is scored on it for each strength of :data:`DAMP_CHOICES`, and the winner is
  refitted on all of them (a few thousand tokens do not pin down a refit of a thousand columns,
  and the error a plain refit leaves on sentences it did not see is many times its own). A layer
  whose calibration inputs vary along few of its input directions (under a fifth, by the ridge's
  effective degrees of freedom: :func:`~pyprune.reconstruct.spanned_fraction`) is refitted
  toward zero instead: there the pull, not the data, would set most of the refit, keeping the
  trained response in every direction the data never showed (on a randomly initialised BERT,
  the candidates a greedy compared after such refits started 4.5 times further from the
  original, and the search stopped far short). A
  weight with single weights removed (unstructured or N:M) gets the
  OBS/SparseGPT update from its input Hessian. Fed as weight values; shipped as the weights.
  A refitted layer gives what lies below it (nearly) its original input back; whether the
  layers below a refit are corrected too is decided by the search by trying both
  (``refits_end_paths``), BatchNormalizations on the way being re-estimated either way.
  A layer whose output is added to a residual stream (a transformer block's output and
  down-projections) can instead be refitted toward the stream, taking back what the blocks above
  it lost there; done block by block on the state a search ships (:meth:`Recovery.run_pass`,
  ``stream``; the search's ``refit_stream``).
  Layers that cannot be refitted (too few calibration rows for their inputs, more than 2048 input
  columns, a grouped convolution, ...) get statistics matching instead; BN re-estimation as in
  ``"stats"``.

Corrections of later layers depend on those of earlier ones, so the problem runs passes (one
data run each: outputs and the sums for the next corrections) until they settle.
Reconstruction is costlier than statistics (a Gram matrix per layer per pass), so candidates a
loop merely compares can be judged with statistics matching on top of the committed
reconstruction (``full=False`` in :meth:`Recovery.run_pass`), and the full refit runs on commit.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from . import core
from .data import Batch
from .evaluate import ChannelStats, MaskedSession, RunningChannelStats
from .graph import Group, MaskPoint, Model, drop_unused
from .reconstruct import conv_output_rows, conv_rows, obs_update, ridge_refit, spanned_fraction
from .surgery import bias_after, fold_output_affine, replace_input

__all__ = ["Recovery", "RECOVERY_MODES", "Snapshot"]

#: Ridge strengths (relative to the mean diagonal of a layer's input Gram matrix) a refit's pull
#: toward its trained weights is chosen from when ``damp`` is not fixed (see the module docstring).
DAMP_CHOICES = (0.01, 0.03, 0.1, 0.3, 1.0)
#: ... and the strength used where there are too few calibration batches to set some aside, and
#: the OBS update's dampening.
DEFAULT_DAMP = 0.01
#: A refit pulls toward the trained weights only when its calibration inputs pin down at least
#: this share of its input directions (:func:`~pyprune.reconstruct.spanned_fraction`). Measured:
#: 0.43-0.85 on ResNet-18's refitted convolutions, 0.72-0.89 on a trained MiniLM's projections,
#: 0.04-0.08 on the attention output projections of a randomly initialised BERT, whose nearly
#: uniform attention gives every token of a sentence almost the same input there; pulled, those
#: made its greedy stop at 0.946 of the MACs under the cosine constraint, against 0.897.
_MIN_SPANNED_TO_PULL = 0.2
#: One calibration batch in this many is set aside to choose the ridge strength on; it takes at
#: least this many batches.
_DAMP_EVERY = 4

#: Recovery modes (see the module docstring).
RECOVERY_MODES = ("none", "stats", "lstsq")
#: A least-squares refit needs at least this many calibration rows per unknown of an output.
_ROWS_PER_UNKNOWN = 2
#: Rows of a convolution's im2col kept per refit: at least this many, or this many per unknown.
_MIN_ROWS, _ROWS_PER_COLUMN = 4096, 12
#: Layers with more input columns than this (im2col columns of a convolution) get statistics
#: matching instead of a refit: the Gram matrix grows with the square and its solve with the cube
#: of the columns (2048: 32 MB and about a second per solve here), per pass.
_MAX_COLUMNS = 2048
#: Statistics matching never scales a channel by more than this factor (or less than its inverse):
#: a channel whose variance pruning all but removed is not blown back up from noise.
_MAX_SCALE = 10.0

#: What a correction state holds: output corrections (tensor -> (scale, shift)), BN input
#: corrections (edge -> (scale, shift)), BN statistics (node -> (mean, var)), fitted weights.
Snapshot = tuple[dict, dict, dict, dict]


@dataclass
class _BatchNorm:
    node: str
    point: MaskPoint  # its input edge
    mean: np.ndarray
    var: np.ndarray
    eps: float


@dataclass
class _Linear:
    """A Conv/ConvTranspose/Gemm/MatMul whose output recovery may correct."""

    node: str
    op: str
    weight: str
    tensor: str  # its output
    axis: int  # channel axis of the output
    width: int  # output channels
    out_axis: int  # the weight's axis of output channels
    missing: int  # parameters folding a shift adds (a full bias it lacks)
    fit: str = "stats"  # "stats", "lstsq" (channels removed from its input) or "obs" (weights removed)
    input: str = ""
    owners: list[tuple[str, np.ndarray]] = field(default_factory=list)  # masks of its input edge
    conv: tuple | None = None  # (kernel, strides, pads, dilations)
    rows: dict[int, np.ndarray] = field(default_factory=dict)  # batch start -> sampled rows
    targets: dict[int, np.ndarray] = field(default_factory=dict)  # batch start -> unpruned output rows
    residual: str = ""  # the residual stream its output is added to (see `Recovery._residual`)
    residual0: dict[int, np.ndarray] = field(default_factory=dict)  # batch start -> the stream's unpruned rows
    mean0: np.ndarray | None = None  # unpruned output statistics
    var0: np.ndarray | None = None


class Recovery:
    """Corrections of one search (see the module docstring).

    ``sources``: slot id -> names of the nodes where cutting that slot changes the computation
    (the consumers of a group's channels, a layer's nodes, a weight's readers); a layer is
    corrected when a cut slot's source is it or lies upstream of it. ``groups``: the channel groups
    (their masks on a layer's input tell which input columns a refit keeps). ``weights``: the
    search masks single weights (unstructured, N:M): refits use the OBS update.
    """

    def __init__(self, model: Model, sources: Mapping[str, Sequence[str]], groups: Sequence[Group] = (), *,
                 mode: str = "stats", weights: bool = False, damp: float | None = None, block_size: int = 128,
                 seed: int = 0) -> None:
        if mode not in RECOVERY_MODES:
            raise ValueError(f"recovery mode must be one of {', '.join(RECOVERY_MODES)}, got {mode!r}")
        self.model, self.mode, self.damp, self.block_size, self.seed = model, mode, damp, block_size, seed
        self.batchnorms: list[_BatchNorm] = []
        self.linears: dict[str, _Linear] = {}
        self._sources: dict[str, list[str]] = {}
        self._downstream: dict[str, set[str]] = {}
        self._corrected: dict[str, set[str]] = {}  # slot id -> what `affected` corrects (cached)
        # Least-squares sums of the last passes under one state's masks: node -> (its input
        # columns, the corrections fed when they were summed, the sums); see `_reusable`.
        self._sums_masks: Any = None
        self._sums_kept: dict[str, tuple[np.ndarray, Snapshot, list]] = {}
        #: Whether a path below a cut ends at the first layer corrected on it (see `affected`).
        #: With ``ends_adaptive`` (least squares on channels or weights) the search sets it, on full
        #: recoveries as the cut grows, to whichever brings the outputs closer to the original.
        self.refits_end_paths = False
        self.ends_adaptive = False
        if mode != "none":
            below = self._below(sources)
            for node in model.nodes:
                if node.name not in below:
                    continue
                bn = self._batchnorm(node)
                if bn is not None:
                    self.batchnorms.append(bn)
                    continue
                linear = self._linear(node)
                if linear is not None:
                    self.linears[node.name] = linear
            self._sources = {sid: list(names) for sid, names in sources.items()}
            self._downstream = {sid: self._reach(names) for sid, names in sources.items()}
            # Refits may end the correction where they apply (channels and weights); removing a
            # whole layer changes no layer's columns, so everything below it is corrected.
            self.ends_adaptive = mode == "lstsq" and (bool(groups) or weights)
            self.refits_end_paths = self.ends_adaptive
            edges: dict[tuple[str, int], list[tuple[str, np.ndarray]]] = {}
            for g in groups:
                for mp in g.mask_points:
                    edges.setdefault((mp.node, mp.input_index), []).append((g.id, np.asarray(mp.index)))
            if mode == "lstsq":
                for linear in self.linears.values():
                    self._choose_fit(linear, edges.get((linear.node, 0), []), weights)
        self.fit_rows: int | None = None  # samples [0, fit_rows) are fitted on (the rest: holdout)
        #: Whether calibration keeps what refits toward the residual stream need (the stream's
        #: unpruned rows; see :meth:`run_pass`, ``stream``) and passes read the stream.
        self.stream_fit = False
        self.token_mask = _token_mask_input(model)  # padding tokens are not fitted on (see _tokens)
        self.outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # tensor -> (scale, shift)
        self.corrections: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}  # BN input edges
        self.bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.weights: dict[str, np.ndarray] = {}  # refitted weights (lstsq, obs)
        self.unpruned: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # BN input statistics, unpruned

    # -- discovery ------------------------------------------------------------------------------

    def _reach(self, names: Iterable[str], ends: Callable[[str], bool] = lambda name: False) -> set[str]:
        """Nodes at or below ``names`` in the graph; a path stops at (after) a node ``ends`` names."""
        seen: set[str] = set()
        todo = [n for n in names if n]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if ends(name):
                continue
            try:
                node = self.model.node(name)
            except KeyError:
                continue
            for out in node.output:
                if out:
                    todo.extend(n.name for n, _ in self.model.consumers(out))
        return seen

    def _below(self, sources: Mapping[str, Sequence[str]]) -> set[str]:
        return self._reach(n for names in sources.values() for n in names)

    @property
    def active(self) -> bool:
        return bool(self.batchnorms or self.linears)

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

    def _linear(self, node: onnx.NodeProto) -> _Linear | None:
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or node.domain not in ("", "ai.onnx"):
            return None
        if len(node.input) < 2 or not self.model.is_weight(node.input[1]) or self.model.is_graph_output(node.input[1]):
            return None
        if len(self.model.consumers(node.input[1])) != 1:
            return None  # a shared weight: correcting it for one reader would change the others
        w = self.model.weight(node.input[1])
        if w.dtype.kind != "f":
            return None
        out = node.output[0]
        rank = self.model.rank(out)
        readers = self.model.consumers(out)
        if rank is None or (readers and all(n.op_type == "BatchNormalization" for n, _ in readers)):
            return None  # unknown rank, or BN re-estimation corrects it already
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        if bias and not self.model.is_weight(bias):
            return None
        if op in ("Conv", "ConvTranspose"):
            if op == "ConvTranspose" and _attr(node, "group", 1) != 1:
                return None
            axis, out_axis, width = 1, (0 if op == "Conv" else 1), w.shape[0 if op == "Conv" else 1]
        elif op == "Gemm":
            if rank != 2 or _attr(node, "transA", 0) or w.ndim != 2:
                return None
            trans_b = _attr(node, "transB", 0)
            axis, out_axis, width = 1, (0 if trans_b else 1), w.shape[0 if trans_b else 1]
            if bias and self.model.weight(bias).size not in (1, width):
                return None
        else:
            if w.ndim != 2 or bias_after(self.model, node) is None:
                return None  # no bias to fold a shift into
            axis, out_axis, width = rank - 1, 1, w.shape[1]
        shape = self.model.shape(out)
        if shape is None or shape[axis] != width:
            return None
        missing = 0
        if op != "MatMul":
            missing = int(width - (self.model.weight(bias).size if bias else 0))
            if op == "Gemm" and bias and _attr(node, "beta", 1.0) == 0:
                missing = 0  # the ignored C is replaced
        return _Linear(node.name, op, node.input[1], out, axis, int(width), out_axis, max(missing, 0),
                       input=node.input[0])

    def _choose_fit(self, linear: _Linear, owners: list[tuple[str, np.ndarray]], weights: bool) -> None:
        """Least squares (or OBS) where the layer's form allows it; statistics otherwise."""
        node = self.model.node(linear.node)
        if linear.op == "ConvTranspose":
            return
        if linear.op == "Conv":
            auto = _attr(node, "auto_pad", b"NOTSET")
            w = self.model.weight(linear.weight)
            if _attr(node, "group", 1) != 1 or auto not in (b"NOTSET", b"VALID"):
                return
            spatial = w.ndim - 2
            linear.conv = (tuple(w.shape[2:]), tuple(_attr(node, "strides", [1] * spatial)),
                           tuple(_attr(node, "pads", [0] * 2 * spatial)),
                           tuple(_attr(node, "dilations", [1] * spatial)))
        elif linear.op == "MatMul" and self.model.rank(linear.input) is None:
            return
        linear.owners = owners
        linear.fit = "obs" if weights else "lstsq"
        if linear.fit == "lstsq" and linear.op == "MatMul":
            linear.residual = self._residual(node)

    def _residual(self, node: onnx.NodeProto) -> str:
        """The residual stream a MatMul's biased output is added to (an ``Add``, or the skip input
        of ONNX Runtime's ``SkipLayerNormalization``); "" when it has none (see :meth:`run_pass`,
        ``stream``)."""
        found = bias_after(self.model, node)
        if found is None:
            return ""
        add, _ = found
        if add.op_type in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
            first = list(add.input[:2])
            if first.count(node.output[0]) != 1:
                return ""
            other = first[1 - first.index(node.output[0])]
        else:
            readers = self.model.consumers(add.output[0])
            if len(readers) != 1 or self.model.is_graph_output(add.output[0]):
                return ""
            after, index = readers[0]
            if after.op_type != "Add" or after.domain not in ("", "ai.onnx") or index not in (0, 1):
                return ""
            other = after.input[1 - index]
        same = self.model.shape(other) == self.model.shape(node.output[0])
        return other if other and same and not self.model.is_weight(other) else ""

    # -- session wiring -------------------------------------------------------------------------

    @property
    def affine_points(self) -> list[MaskPoint]:
        """Input edges that need fed scale/shift inputs in the search session (BN inputs)."""
        return [bn.point for bn in self.batchnorms]

    @property
    def output_points(self) -> list[tuple[str, int]]:
        """Layer outputs that need fed scale/shift inputs: ``(tensor, channel axis)``."""
        return [(lin.tensor, lin.axis) for lin in self.linears.values()]

    @property
    def overridable(self) -> list[str]:
        """Weights a refit feeds new values for."""
        return [lin.weight for lin in self.linears.values() if lin.fit != "stats"]

    @property
    def capture(self) -> dict[str, int]:
        """Tensors a pass reads: ``{name: channel axis}``."""
        wanted = {p.tensor: p.axis for p in self.affine_points}
        for lin in self.linears.values():
            wanted[lin.tensor] = lin.axis
            if lin.fit != "stats":
                wanted.setdefault(lin.input, 1 if lin.conv else -1)
                if lin.residual and self.stream_fit:
                    wanted.setdefault(lin.residual, lin.axis)
        return wanted

    def describe(self) -> dict[str, Any]:
        """What this recovery corrects: its mode and the layers per kind of correction."""
        kinds: dict[str, list[str]] = {}
        for lin in self.linears.values():
            kinds.setdefault({"stats": "statistics", "lstsq": "least squares", "obs": "OBS"}[lin.fit],
                             []).append(lin.node)
        if self.batchnorms:
            kinds["batchnorm"] = [bn.node for bn in self.batchnorms]
        return {"mode": self.mode, "layers": kinds}

    def affected(self, changed: Iterable[str], refitting: bool = True) -> set[str]:
        """Nodes whose computation the cut slots ``changed`` alter and that recovery corrects.

        With least squares and ``refits_end_paths``, a path below a cut ends at the first layer
        corrected on it: a refit matches that layer's output to the unpruned one from the pruned
        inputs, so what lies below sees (nearly) its original input again. Correcting those later
        layers too, each from statistics measured under the others' previous corrections, does
        not settle in deep residual stacks (a transformer encoder: every projection below the cut)
        and moves the outputs away from the original; in a CNN it also refits the head to the
        features that changed, which helps. With ``ends_adaptive`` the search tries both on full
        recoveries as the cut grows and keeps the closer one. BatchNormalizations on the way are still
        re-estimated either way.
        ``refitting`` False: a quick pass, which refits nothing (statistics on top of the committed
        refits), corrects everything below.
        """
        out: set[str] = set()
        for sid in changed:
            ends = self.refits_end_paths and refitting
            out |= self._corrected_below(sid) if ends else self._downstream.get(sid, set())
        return out

    def _corrected_below(self, sid: str) -> set[str]:
        if sid not in self._corrected:
            # A path ends at the first layer corrected on it (refitted, or statistics-matched
            # without enough rows to refit); BatchNormalizations on the way are re-estimated.
            reached = self._reach(self._sources.get(sid, []), ends=lambda name: name in self.linears)
            bns = {bn.node for bn in self.batchnorms}
            self._corrected[sid] = {n for n in reached if n in self.linears or n in bns}
        return self._corrected[sid]

    def added_params(self, changed: Iterable[str], kept: Callable[[str, int], int]) -> int:
        """Parameters the shipped model gains from folding: a bias for each corrected layer that
        lacks one, of its kept output width (``kept(weight, axis)``)."""
        hit = self.affected(changed)
        total = 0
        for lin in self.linears.values():
            if lin.missing and lin.node in hit:
                total += min(lin.missing, kept(lin.weight, lin.out_axis))
        return total

    def feed(self, masks_weights: Mapping[str, np.ndarray] | None = None,
             snapshot: Snapshot | None = None) -> tuple[dict, dict[str, np.ndarray]]:
        """``(affine, weights)`` for :meth:`MaskedSession.run`: the corrections of ``snapshot``
        (default: the current ones) and the weight masks ``masks_weights`` (refitted values,
        further masked by the state's own weight masks)."""
        outputs, edges, _, fitted = snapshot if snapshot is not None else self.snapshot()
        affine: dict = {**edges, **outputs}
        weights: dict[str, np.ndarray] = dict(masks_weights or {})
        for name, values in fitted.items():
            mask = weights.get(name)
            weights[name] = values if mask is None else np.where(mask, values, 0.0).astype(values.dtype)
        return affine, weights

    # -- estimation -----------------------------------------------------------------------------

    def _fitting(self, batch: Batch) -> bool:
        return self.fit_rows is None or batch.stop <= self.fit_rows

    def calibrate(self, session: MaskedSession, parts: Sequence[int] = ()) -> list[np.ndarray]:
        """Run the unpruned model once: its outputs (returned: the session's reference), the BN
        input and layer output statistics it had, and the refit targets (sampled output rows).

        ``parts``: first-sample counts the corrections may be fitted on instead of all the
        fitted data (costly models, where every recovery pass runs the data). The smallest in
        which every least-squares refit still has enough rows for its unknowns, its rows sampled
        at the rate it has on all the data, becomes :attr:`fit_rows` (statistics, refits and
        their rows then come from it alone); none: all the data, as without ``parts``."""
        running = {name: RunningChannelStats(name, axis, moments_only=True) for name, axis in self.capture.items()}
        refit = [lin for lin in self.linears.values() if lin.fit != "stats"]
        stops: dict[int, int] = {}  # batch start -> stop
        counted: dict[str, dict[int, int]] = {lin.node: {} for lin in refit}  # rows each batch had
        fitted_samples = sum(b.stop - b.start for b in session.batches if self._fitting(b))
        # A convolution's rows per sample are fixed, so its total is known from the first batch
        # and its rows are sampled as they arrive: holding every output row of every refitted
        # layer until the end took 5.6 GB on a ResNet-50 with 64 images.
        sampling: dict[str, tuple[int, int]] = {}  # convolution -> (its total rows, rows it keeps)
        rngs: dict[str, np.random.Generator] = {}

        def visit(batch: Batch, values: dict[str, np.ndarray]) -> None:
            if not self._fitting(batch):
                return
            stops[batch.start] = batch.stop
            for name, stats in running.items():
                stats.update(values[name])
            for lin in refit:
                y = values[lin.tensor]
                rows = conv_output_rows(y) if lin.conv else self._tokens(y, batch)
                counted[lin.node][batch.start] = rows.shape[0]
                if lin.residual and self.stream_fit:
                    lin.residual0[batch.start] = self._tokens(values[lin.residual], batch)
                if lin.conv:
                    if lin.node not in sampling:
                        total = rows.shape[0] * fitted_samples // (batch.stop - batch.start)
                        sampling[lin.node] = (total, self._rows_kept(lin, total))
                    total, cap = sampling[lin.node]
                    if not cap:
                        continue  # too few rows for its unknowns: statistics matching (below)
                    if total > cap:
                        chosen = self._choose_rows(lin, rngs, rows.shape[0], cap, total)
                        lin.rows[batch.start], rows = chosen, rows[chosen]
                lin.targets[batch.start] = np.ascontiguousarray(rows, dtype=np.float32)

        outputs = session.stream(visit)
        stats = {name: r.result() for name, r in running.items()}
        self.unpruned = {bn.node: (stats[bn.point.tensor].mean, stats[bn.point.tensor].var) for bn in self.batchnorms}
        for lin in self.linears.values():
            lin.mean0, lin.var0 = stats[lin.tensor].mean, stats[lin.tensor].var

        def rows_in(lin: _Linear, samples: int | None) -> int:
            return sum(n for start, n in counted[lin.node].items() if samples is None or stops[start] <= samples)

        total = {lin.node: sampling[lin.node][0] if lin.node in sampling else rows_in(lin, None) for lin in refit}

        def enough(lin: _Linear, samples: int) -> bool:
            # The refit keeps the same share of each batch's rows whatever part it is fitted on
            # (fewer rows, the same cost per row); enough when it can still be solved.
            kept, needed = self._rows_kept(lin, total[lin.node]), _ROWS_PER_UNKNOWN * (self._columns(lin) + 1)
            return not kept or kept * rows_in(lin, samples) >= needed * total[lin.node]

        part = next((n for n in sorted(parts) if all(enough(lin, n) for lin in refit)), None)
        if part is not None:
            self.fit_rows = part
            for lin in refit:
                lin.targets = {start: t for start, t in lin.targets.items() if stops[start] <= part}
                lin.residual0 = {start: t for start, t in lin.residual0.items() if stops[start] <= part}
                lin.rows = {start: r for start, r in lin.rows.items() if stops[start] <= part}
        for lin in refit:
            cap = self._rows_kept(lin, total[lin.node])
            if not cap:
                lin.fit, lin.targets, lin.rows, lin.residual0 = "stats", {}, {}, {}
            elif not lin.conv and total[lin.node] > cap:  # sampled here: token rows per sample vary
                for start, rows in lin.targets.items():
                    chosen = self._choose_rows(lin, rngs, rows.shape[0], cap, total[lin.node])
                    lin.rows[start], lin.targets[start] = chosen, np.ascontiguousarray(rows[chosen])
                    if start in lin.residual0:
                        lin.residual0[start] = np.ascontiguousarray(lin.residual0[start][chosen])
        self._corrected.clear()  # which layers refit is known now
        return outputs

    def _choose_rows(self, lin: _Linear, rngs: dict[str, np.random.Generator], rows: int, cap: int,
                     total: int) -> np.ndarray:
        """Which of a batch's ``rows`` a refit keeps: the batch's share of ``cap`` of ``total``,
        drawn from one generator per layer (the same rows whatever else is refitted)."""
        if lin.node not in rngs:
            rngs[lin.node] = np.random.default_rng((self.seed * 1_000_003 + zlib.crc32(lin.node.encode())) & 0x7FFFFFFF)
        return np.sort(rngs[lin.node].choice(rows, size=max(1, rows * cap // total), replace=False))

    def _columns(self, lin: _Linear) -> int:
        """Input columns of ``lin``'s least-squares problem (im2col columns of a convolution)."""
        w = self.model.weight(lin.weight)
        transposed = lin.op == "Gemm" and _attr(self.model.node(lin.node), "transB", 0)
        return int(np.prod(w.shape[1:])) if lin.conv else int(w.shape[1] if transposed else w.shape[0])

    def _rows_kept(self, lin: _Linear, total: int) -> int:
        """How many of ``total`` output rows a refit of ``lin`` keeps (0: too few to refit)."""
        columns = self._columns(lin)
        if total < _ROWS_PER_UNKNOWN * (columns + 1) or columns > _MAX_COLUMNS:
            return 0
        return min(total, max(_MIN_ROWS, _ROWS_PER_COLUMN * (columns + 1)))

    @property
    def stream_layers(self) -> list[str]:
        """The refitted layers that add their output to a residual stream, in graph order (none
        unless :attr:`stream_fit`: only then does calibration keep the stream's rows):
        :meth:`run_pass` with ``stream`` takes them one at a time."""
        return [lin.node for lin in self.linears.values() if lin.fit == "lstsq" and lin.residual0]

    def run_pass(self, session: MaskedSession, masks: Any, changed: set[str], full: bool = True,
                 threads: int | None = None, moved: set[str] | None = None,
                 stream: str | None = None) -> tuple[list[np.ndarray], float]:
        """One data run under ``masks`` (a :class:`~pyprune.search.spaces.Masks`) with the current
        corrections fed: returns its outputs and moves the corrections to what the run measured;
        the float is the largest relative change (passes repeat until it is small).
        ``changed``: the cut slots. ``full=False``: layers that refit keep their committed
        weights and get statistics matching on top (cheap, for comparing candidates).
        ``moved``: the slots whose cut differs from the state the current corrections were
        settled for; only the layers below them are estimated again, the others keep theirs
        (their inputs did not change). None: every layer below a cut slot.

        ``stream``: the one layer of :attr:`stream_layers` whose refit aims at the residual
        stream this pass: its target is its unpruned output plus what the stream it is
        added to lost upstream (``y0 + r0 - r``), so the block takes back the error the blocks
        above it left in the stream instead of passing it down. Layers before it on the stream
        keep their corrections (they took theirs in earlier passes), layers after it are refitted
        to their own outputs as usual. Run for every such layer in turn, this is a sequential
        reconstruction of the stream, block by block: each correction depends on the final
        corrections above it, which passes fitting every layer at once cannot give (aimed at the
        stream together, the blocks overcorrect each other's errors and diverge)."""
        hit = self.affected(changed if moved is None else moved, refitting=full)
        keeps = masks.groups
        running = {lin.tensor: RunningChannelStats(lin.tensor, lin.axis, moments_only=True)
                   for lin in self.linears.values() if lin.node in hit}
        running.update({bn.point.tensor: RunningChannelStats(bn.point.tensor, 1, moments_only=True)
                        for bn in self.batchnorms if bn.node in hit})
        refit = [lin for lin in self.linears.values() if full and lin.fit != "stats" and lin.node in hit]
        sums: dict[str, list[np.ndarray | None]] = {}
        columns: dict[str, np.ndarray] = {}
        for lin in refit:
            columns[lin.node] = self._input_keep(lin, keeps)
        fed = self.snapshot()
        span = tuple(batch.start for batch in session.batches)  # sums over these batches only
        order = self.stream_layers if stream is not None else []
        kept = set(order[:order.index(stream)]) if stream in order else set()
        aimed = next((lin for lin in refit if lin.node == stream and stream in order), None)
        sums.update(self._reusable((masks, span), refit, columns, fed))
        if aimed is not None:  # its sums aim at the stream: never those of a pass fitting outputs
            sums.pop(aimed.node, None)
        summing = [lin for lin in refit if lin.node not in sums and lin.node not in kept]
        aside = self._set_aside(session)

        def visit(batch: Batch, values: dict[str, np.ndarray]) -> None:
            if not self._fitting(batch):
                return
            for name, stats in running.items():
                stats.update(values[name])
            for lin in summing:
                x = self._rows(lin, values[lin.input], batch)
                if lin.fit == "lstsq":
                    x = np.concatenate([x[:, columns[lin.node]], np.ones((x.shape[0], 1), x.dtype)], axis=1)
                    target = lin.targets[batch.start]
                    if lin is aimed:
                        lost = lin.residual0[batch.start] - self._rows(lin, values[lin.residual], batch)
                        target = np.ascontiguousarray(target + lost, dtype=np.float32)
                    # [XᵀX, XᵀY] of the batches fitted on, then of those set aside
                    both = sums.setdefault(lin.node, [None] * 4)
                    at = 2 if batch.start in aside else 0
                    both[at], both[at + 1] = core.gram_accumulate(x, target, both[at], both[at + 1],
                                                                  threads=threads)
                else:
                    g = sums.get(lin.node, [None])[0]
                    sums[lin.node] = [core.gram_accumulate(x, None, g, threads=threads)[0]]

        affine, weights = self.feed(masks.weights)
        outputs = session.stream(visit, masks.groups, masks.gates, weights, affine)
        for lin in refit:
            if lin.node in sums and lin is not aimed:
                self._sums_kept[lin.node] = (columns[lin.node], fed, sums[lin.node])
        stats = {name: r.result() for name, r in running.items()}
        before = self.snapshot()
        self._update_batchnorms(stats, keep_others=moved is not None)
        new_outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        new_weights: dict[str, np.ndarray] = {} if full else dict(self.weights)
        if moved is not None:  # the layers not estimated again keep their corrections
            for lin in self.linears.values():
                if lin.node not in hit:
                    if lin.tensor in self.outputs:
                        new_outputs[lin.tensor] = self.outputs[lin.tensor]
                    if lin.weight in self.weights:
                        new_weights[lin.weight] = self.weights[lin.weight]
        for lin in self.linears.values():
            if lin.node not in hit:
                continue
            if lin.node in kept:
                if lin.weight in self.weights:
                    new_weights[lin.weight] = self.weights[lin.weight]
                if lin.tensor in self.outputs:
                    new_outputs[lin.tensor] = self.outputs[lin.tensor]
                continue
            if lin.node in sums:
                values, shift = self._refit(lin, sums[lin.node], columns.get(lin.node), masks.weights)
                new_weights[lin.weight] = values
                if shift is not None:
                    new_outputs[lin.tensor] = (np.ones(lin.width), shift)
                continue
            if full and lin.fit != "stats" and lin.weight in self.weights:
                new_weights[lin.weight] = self.weights[lin.weight]
            new_outputs[lin.tensor] = self._match(lin, stats[lin.tensor], self.outputs.get(lin.tensor))
        self.outputs, self.weights = new_outputs, new_weights
        return outputs, _change(before, self.snapshot(), self.linears)

    def _set_aside(self, session: MaskedSession) -> set[int]:
        """Starts of the calibration batches a refit sets aside to choose its ridge strength on
        (none when ``damp`` is fixed or there are too few batches)."""
        if self.damp is not None:
            return set()
        fitting = [b.start for b in session.batches if self._fitting(b)]
        if len(fitting) < _DAMP_EVERY:
            return set()
        return set(fitting[_DAMP_EVERY - 1::_DAMP_EVERY])

    def _input_keep(self, lin: _Linear, keeps: Mapping[str, np.ndarray]) -> np.ndarray:
        """Which input columns of ``lin`` its refit keeps (those its input masks let through)."""
        w = self.model.weight(lin.weight)
        if lin.conv:
            channels, per = w.shape[1], int(np.prod(w.shape[2:]))
        else:
            node = self.model.node(lin.node)
            channels = w.shape[1] if lin.op == "Gemm" and _attr(node, "transB", 0) else w.shape[0]
            per = 1
        keep = np.ones(channels, dtype=bool)
        for gid, index in lin.owners:
            mask = keeps.get(gid)
            if mask is not None:
                owned = index >= 0
                keep[owned] &= np.asarray(mask)[index[owned]]
        return np.repeat(keep, per)

    def _rows(self, lin: _Linear, x: np.ndarray, batch: Batch) -> np.ndarray:
        chosen = lin.rows.get(batch.start)
        if lin.conv:
            kernel, strides, pads, dilations = lin.conv
            return conv_rows(x, kernel, strides, pads, dilations, select=chosen)
        rows = self._tokens(x, batch)
        return np.ascontiguousarray(rows if chosen is None else rows[chosen])

    def _tokens(self, x: np.ndarray, batch: Batch) -> np.ndarray:
        """``x`` as rows of its last axis, without the positions the model's attention mask marks
        as padding: a sequence model computes something at those positions too, but nothing
        downstream reads it, and in padded calibration batches they can be most of the rows."""
        rows = x.reshape(-1, x.shape[-1])
        mask = batch.feed.get(self.token_mask) if self.token_mask else None
        if mask is None or x.ndim != 3 or tuple(x.shape[:2]) != tuple(mask.shape):
            return rows
        keep = np.asarray(mask).reshape(-1) != 0
        return rows if keep.all() or not keep.any() else rows[keep]

    def _refit(self, lin: _Linear, sums: list, keep: np.ndarray | None,
               masked: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """New weight values (in the weight's own layout and dtype) and the output shift that
        carries the fitted intercept (None for OBS, which fits no intercept)."""
        node = self.model.node(lin.node)
        w = self.model.weight(lin.weight)
        trans_b = lin.op == "Gemm" and _attr(node, "transB", 0)
        alpha = float(_attr(node, "alpha", 1.0)) if lin.op == "Gemm" else 1.0
        rows = w.reshape(w.shape[0], -1) if lin.op == "Conv" else (w if trans_b else w.T)  # (outputs, inputs)
        if lin.fit == "obs":
            keep = masked.get(lin.weight)
            keep_rows = np.ones(rows.shape, bool) if keep is None else (
                keep.reshape(rows.shape) if lin.op == "Conv" else (keep if trans_b else keep.T))
            damp = DEFAULT_DAMP if self.damp is None else self.damp
            fitted = obs_update(rows, keep_rows, sums[0], damp, self.block_size)
            values = fitted.reshape(w.shape) if lin.op == "Conv" else (fitted if trans_b else fitted.T)
            return np.ascontiguousarray(values, dtype=w.dtype), None
        trained = rows.T * alpha  # the trained weights in the refit's layout: (input columns, outputs)
        prior: np.ndarray | None = trained
        if keep is not None:
            prior = trained[keep] if keep.size == trained.shape[0] else None
        coef, intercept = self._ridge_fit(sums, None if prior is None else prior.astype(np.float64))
        full = np.zeros((keep.size, coef.shape[1])) if keep is not None else coef
        if keep is not None:
            full[keep] = coef
        if lin.op == "Conv":
            values = full.T.reshape(w.shape)
        elif lin.op == "Gemm":
            values = (full.T if trans_b else full) / (alpha if alpha else 1.0)
        else:
            values = full
        return np.ascontiguousarray(values, dtype=w.dtype), intercept - self._bias(lin, node)

    def _ridge_fit(self, sums: list, trained: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The ridge refit from ``[XᵀX, XᵀY]`` of the batches fitted on and of those set aside
        (None when none were), pulled toward ``trained`` where the inputs span enough of their
        directions (toward zero where they do not); see the module docstring."""
        fit_g, fit_c, aside_g, aside_c = sums  # the first batch is never set aside: fit_g is there
        keep = np.ones(fit_g.shape[0] - 1, bool)
        if trained is not None and trained.shape != (keep.size, fit_c.shape[1]):
            trained = None
        everything = fit_g if aside_g is None else fit_g + aside_g
        if trained is not None and spanned_fraction(everything, DEFAULT_DAMP) < _MIN_SPANNED_TO_PULL:
            trained = None
        if aside_g is None:
            return ridge_refit(fit_g, fit_c, keep, DEFAULT_DAMP if self.damp is None else self.damp, prior=trained)

        def aside_error(damp: float) -> float:
            w, b = ridge_refit(fit_g, fit_c, keep, damp, prior=trained)
            full = np.vstack([w, b[None]])  # the intercept is the Gram matrices' last column
            return float(np.sum(full * (aside_g @ full)) - 2.0 * np.sum(full * aside_c))

        best = min(DAMP_CHOICES, key=aside_error)
        return ridge_refit(everything, fit_c + aside_c, keep, best, prior=trained)

    def _bias(self, lin: _Linear, node: onnx.NodeProto) -> np.ndarray:
        """What the layer's output already adds per channel (its bias, or beta * C)."""
        if lin.op == "MatMul" or len(node.input) < 3 or not node.input[2]:
            return np.zeros(lin.width)
        b = self.model.weight(node.input[2]).astype(np.float64).reshape(-1)
        if lin.op == "Gemm":
            b = b * float(_attr(node, "beta", 1.0))
        return np.broadcast_to(b, (lin.width,)).copy()

    def _match(self, lin: _Linear, measured: ChannelStats, fed: tuple[np.ndarray, np.ndarray] | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Scale and shift giving the layer's output the unpruned mean and variance, from the
        statistics of its corrected output under the correction ``fed``."""
        assert lin.mean0 is not None and lin.var0 is not None
        scale0, shift0 = fed if fed is not None else (np.ones(lin.width), np.zeros(lin.width))
        safe = np.where(np.abs(scale0) > 1e-12, scale0, 1.0)
        mean = (measured.mean - shift0) / safe
        var = measured.var / (safe * safe)
        floor = 1e-12 + 1e-6 * float(np.max(lin.var0, initial=0.0))
        scale = np.sqrt((lin.var0 + floor) / (var + floor))
        scale = np.clip(scale, 1.0 / _MAX_SCALE, _MAX_SCALE)
        return scale, lin.mean0 - scale * mean

    def _update_batchnorms(self, stats: Mapping[str, ChannelStats], keep_others: bool = False) -> None:
        """Re-estimate the BatchNormalizations measured in ``stats``; the others lose their
        correction, or keep it with ``keep_others``."""
        new: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for bn in self.batchnorms:
            if bn.point.tensor not in stats:
                if keep_others and bn.node in self.bn_stats:
                    new[(bn.node, 0)] = self.corrections[(bn.node, 0)]
                    bn_stats[bn.node] = self.bn_stats[bn.node]
                continue
            mean, var = stats[bn.point.tensor].mean, stats[bn.point.tensor].var
            if bn.node in self.unpruned:
                # New running statistics that give the BN's output, on this data, the mean and
                # variance it had unpruned: var' + eps = (var + eps) r^2, mean' = m1 - (m0 - mean) r.
                m0, v0 = self.unpruned[bn.node]
                r = np.sqrt(np.where(v0 > 1e-12, var / np.where(v0 > 1e-12, v0, 1.0), 1.0))
                mean = mean - (m0 - bn.mean) * r
                var = np.maximum((bn.var + bn.eps) * r * r - bn.eps, 0.0)
            scale = np.sqrt(bn.var + bn.eps) / np.sqrt(var + bn.eps)
            new[(bn.node, 0)] = (scale, bn.mean - scale * mean)
            bn_stats[bn.node] = (mean, var)
        self.corrections, self.bn_stats = new, bn_stats

    def _reusable(self, key: tuple[Any, tuple[int, ...]], refit: Sequence[_Linear],
                  columns: Mapping[str, np.ndarray], fed: Snapshot) -> dict[str, list]:
        """Least-squares sums of an earlier pass under the same masks and over the same batches
        (``key``) that this pass would compute again: a layer's input is the same when no
        correction fed upstream of it changed since (its own refit included, which changes its
        output, not its input). The sums then are too, so the pass skips their rows and Gram
        matrices, the costliest part of a pass."""
        kept_key = self._sums_masks
        if kept_key is None or key[0] is not kept_key[0] or key[1] != kept_key[1]:
            self._sums_masks, self._sums_kept = key, {}
            return {}
        reused: dict[str, list] = {}
        below: dict[int, set[str]] = {}  # per snapshot summed under (layers of one pass share it)
        for lin in refit:
            kept = self._sums_kept.get(lin.node)
            if kept is None or not np.array_equal(kept[0], columns[lin.node]):
                continue
            if id(kept[1]) not in below:
                below[id(kept[1])] = self._fed_changes_below(kept[1], fed)
            if lin.node not in below[id(kept[1])]:
                reused[lin.node] = kept[2]
        return reused

    def _fed_changes_below(self, a: Snapshot, b: Snapshot) -> set[str]:
        """Nodes whose inputs differ between feeding the corrections ``a`` and ``b``: everything
        below a layer whose output correction or weights differ, and below (and at) a node whose
        input-edge correction differs."""
        def differs(x: Any, y: Any) -> bool:
            if x is y:
                return False
            if isinstance(x, tuple) and isinstance(y, tuple):
                return len(x) != len(y) or any(differs(p, q) for p, q in zip(x, y))
            return x is None or y is None or not np.array_equal(x, y)

        producers = {lin.node for lin in self.linears.values()
                     if differs(a[0].get(lin.tensor), b[0].get(lin.tensor))
                     or differs(a[3].get(lin.weight), b[3].get(lin.weight))}
        entered = {key[0] for key in set(a[1]) | set(b[1]) if differs(a[1].get(key), b[1].get(key))}
        below: set[str] = set(entered)
        for name in producers | entered:
            node = self.model.node(name)
            below |= self._reach(n.name for out in node.output if out for n, _ in self.model.consumers(out))
        return below

    def snapshot(self) -> Snapshot:
        return dict(self.outputs), dict(self.corrections), dict(self.bn_stats), dict(self.weights)

    def restore(self, snap: Snapshot) -> None:
        self.outputs, self.corrections, self.bn_stats, self.weights = (dict(s) for s in snap)

    def clear(self) -> None:
        """No correction at all (the state of the unpruned model)."""
        self.restore(({}, {}, {}, {}))

    # -- shipping -------------------------------------------------------------------------------

    def fold(self, model: Model, snapshot: Snapshot | None = None, changed: Iterable[str] | None = None) -> Model:
        """A copy of ``model`` (the unpruned original) with the corrections folded into weights:
        refitted weights, output scales and shifts in weights and biases, BN statistics replaced.
        ``changed``: the cut slots; every layer they affect gets its bias (as counted)."""
        outputs, edges, bn_stats, fitted = snapshot if snapshot is not None else self.snapshot()
        hit = self.affected(changed) if changed is not None else None
        out = model.copy()
        for bn in self.batchnorms:
            if bn.node not in bn_stats or (bn.node, 0) not in edges:
                continue
            mean, var = bn_stats[bn.node]
            node = out.node(bn.node)
            replace_input(out, node, 3, mean)
            replace_input(out, node, 4, var)
        for lin in self.linears.values():
            node = out.node(lin.node)
            if lin.weight in fitted:
                replace_input(out, node, 1, fitted[lin.weight])
            correction = outputs.get(lin.tensor)
            if correction is None and (hit is None or lin.node not in hit or not lin.missing):
                continue
            scale, shift = correction if correction is not None else (np.ones(lin.width), np.zeros(lin.width))
            fold_output_affine(out, node, lin.out_axis, scale, shift)
        drop_unused(out.proto.graph, nodes=False)  # the weights and statistics that were replaced
        out.refresh()
        return out


def _change(before: Snapshot, after: Snapshot, linears: Mapping[str, _Linear]) -> float:
    """Largest change between two correction states, relative to each quantity's scale."""
    change = 0.0
    spread = {lin.tensor: np.sqrt(np.maximum(lin.var0, 0.0)) + 1e-6 for lin in linears.values()
              if lin.var0 is not None}
    for i, (old, new) in enumerate(zip(before[:2], after[:2])):
        for key in set(old) | set(new):
            if key not in old or key not in new:
                return float("inf")
            (s0, t0), (s1, t1) = old[key], new[key]
            unit = spread.get(key, 1.0) if i == 0 else 1.0
            change = max(change, float(np.max(np.abs(s1 - s0), initial=0.0)),
                         float(np.max(np.abs(t1 - t0) / unit, initial=0.0)))
    for name in set(before[3]) | set(after[3]):
        if name not in before[3] or name not in after[3]:
            return float("inf")
        old_w, new_w = before[3][name], after[3][name]
        scale = float(np.max(np.abs(new_w), initial=0.0)) + 1e-12
        change = max(change, float(np.max(np.abs(new_w - old_w), initial=0.0)) / scale)
    return change


def _token_mask_input(model: Model) -> str | None:
    """The graph input that marks real tokens (1) and padding (0) of a sequence model — an
    integer or boolean ``[batch, sequence]`` input whose name says it is a mask
    (``attention_mask``, ``input_mask``) — or None."""
    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL}
    for name in model.input_names:
        if "mask" in name.lower() and not model.is_weight(name) and model.rank(name) == 2 \
                and model.elem_type(name) in integer:
            return name
    return None


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default
