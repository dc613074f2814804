"""How a (pruned) model is judged: task metrics with labels, fidelity metrics without.

A :class:`Metric` is a name, a function ``(outputs, target) -> float`` and a direction
(``"higher"`` or ``"lower"`` is better). ``target`` is either the labels of the dataset or the
outputs of the unpruned model on the same data (the *reference*, computed once and cached by the
evaluator). Metrics that are a mean of per-sample scores also expose those scores and their
bounds, which lets an evaluation stop early once a constraint can no longer be met.

Task metrics: :func:`accuracy` (top-1, top-k), :func:`macro_f1`. Fidelity metrics:
:func:`agreement` (top-1), :func:`cosine`, :func:`relative_mse`, :func:`kl_divergence` (for
models that output logits) and :func:`probability_kl` (for models that already output
probabilities). Any callable becomes a metric with :func:`custom`; :func:`get` parses names such as ``"top5"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import numpy as np

from .errors import DataError

__all__ = [
    "Metric",
    "accuracy",
    "macro_f1",
    "agreement",
    "cosine",
    "relative_mse",
    "kl_divergence",
    "probability_kl",
    "custom",
    "get",
    "for_data",
    "judged_output",
    "label_outputs",
    "names",
]

Direction = Literal["higher", "lower"]
TargetKind = Literal["labels", "reference"]


@dataclass(frozen=True)
class Metric:
    """A named score of model outputs against labels or reference outputs.

    ``fn`` receives the selected model output (``outputs[output]``, all samples, or the whole
    list when ``output`` is None) and the target: the labels array, or the matching reference
    output (the whole reference list when ``output`` is None).

    ``sample_fn``, when given, returns one score per sample and the metric is their mean; its
    values lie within ``bounds``. The evaluator uses this to stop early (see
    :meth:`best_possible`).
    """

    name: str
    fn: Callable[[Any, Any], float]
    direction: Direction = "higher"
    target: TargetKind = "labels"
    output: int | None = 0
    sample_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    bounds: tuple[float, float] = (-math.inf, math.inf)

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"metric direction must be 'higher' or 'lower', got {self.direction!r}")
        if self.target not in ("labels", "reference"):
            raise ValueError(f"metric target must be 'labels' or 'reference', got {self.target!r}")
        if not callable(self.fn):
            raise TypeError(f"metric {self.name!r}: fn must be callable")

    @property
    def needs_labels(self) -> bool:
        return self.target == "labels"

    def select(self, outputs: Sequence[np.ndarray], target: Any) -> tuple[Any, Any]:
        """The output and target this metric looks at (see the class docstring)."""
        if self.output is None:
            return list(outputs), target
        if not 0 <= self.output < len(outputs) and not -len(outputs) <= self.output < 0:
            raise ValueError(
                f"metric {self.name!r} reads output {self.output}, the model has {len(outputs)}"
            )
        out = outputs[self.output]
        if self.target == "reference":
            target = target[self.output]
        return out, target

    def __call__(self, outputs: Sequence[np.ndarray], target: Any) -> float:
        """Score ``outputs`` (a list, one array per model output) against ``target``."""
        out, tgt = self.select(outputs, target)
        return float(self.fn(out, tgt))

    def sample_scores(self, outputs: Sequence[np.ndarray], target: Any) -> np.ndarray:
        """Per-sample scores (only for metrics that are a mean of them)."""
        if self.sample_fn is None:
            raise TypeError(f"metric {self.name!r} is not a mean of per-sample scores")
        out, tgt = self.select(outputs, target)
        return np.asarray(self.sample_fn(out, tgt), dtype=np.float64)

    def is_better(self, a: float, b: float) -> bool:
        """True when score ``a`` is strictly better than ``b``."""
        return a > b if self.direction == "higher" else a < b

    def meets(self, value: float, threshold: float) -> bool:
        """True when ``value`` is at least as good as ``threshold``."""
        return value >= threshold if self.direction == "higher" else value <= threshold

    @property
    def best(self) -> float:
        """The best value the metric can take (infinite where its bounds set none)."""
        return self.bounds[1] if self.direction == "higher" else self.bounds[0]

    def best_possible(self, partial_sum: float, seen: int, total: int) -> float:
        """Best final value given the per-sample scores summed so far over ``seen`` samples."""
        best = self.best
        if math.isinf(best):
            return best
        return (partial_sum + (total - seen) * best) / total


# -- per-sample scorers ---------------------------------------------------------------------------


def _class_labels(out: np.ndarray, labels: np.ndarray, axis: int) -> np.ndarray:
    """Integer class labels shaped like ``out`` without its class axis."""
    axis = axis % out.ndim
    labels = np.asarray(labels)
    if labels.shape == out.shape and labels.ndim >= 2:  # one-hot or probabilities
        return np.argmax(labels, axis=axis)
    expected = out.shape[:axis] + out.shape[axis + 1 :]
    if labels.shape != expected:
        if labels.size == math.prod(expected):
            labels = labels.reshape(expected)
        else:
            raise DataError(
                f"labels of shape {list(labels.shape)} do not fit outputs of shape "
                f"{list(out.shape)} (class axis {axis}): expected {list(expected)}"
            )
    if labels.dtype.kind not in "biuf":
        raise DataError(f"labels have dtype {labels.dtype}; give integer class ids (or one-hot rows)")
    if not np.issubdtype(labels.dtype, np.integer):
        rounded = np.rint(labels)
        if not np.array_equal(rounded, labels):
            raise DataError("labels must be integer class ids (or one-hot rows)")
        labels = rounded
    labels = labels.astype(np.int64)
    classes = out.shape[axis]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"labels hold class ids from {int(labels.min())} to {int(labels.max())}, but the model "
                        f"output has {classes} classes (ids 0 to {classes - 1})")
    return labels


def _per_sample_mean(values: np.ndarray) -> np.ndarray:
    """Average a per-position array over everything but the sample axis."""
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(values.shape[0], -1).mean(axis=1) if values.ndim > 1 else values


def _is_label_output(out: np.ndarray) -> bool:
    """Integer (or boolean) outputs hold predicted classes, not scores per class."""
    return out.dtype.kind in "biu"


def _same_labels(out: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample agreement of a predicted-class output with labels of the same length."""
    labels = np.asarray(labels)
    if labels.size != out.size:
        raise DataError(f"labels of shape {list(labels.shape)} do not fit the predicted classes of shape "
                        f"{list(out.shape)} (an integer output)")
    return _per_sample_mean(out == labels.reshape(out.shape))


def _topk_correct(out: np.ndarray, labels: np.ndarray, k: int, axis: int) -> np.ndarray:
    out = np.asarray(out)
    if _is_label_output(out):
        if k != 1:
            raise ValueError(f"top-{k} accuracy needs scores per class; the judged output holds classes")
        return _same_labels(out, labels)
    axis = axis % out.ndim
    labels = _class_labels(out, labels, axis)
    if k == 1:
        return _per_sample_mean(np.argmax(out, axis=axis) == labels)
    if k > out.shape[axis]:
        raise ValueError(f"top-{k} accuracy needs at least {k} classes, outputs have {out.shape[axis]}")
    # Stable sort of the negated scores breaks ties towards the lower class id, as argmax does.
    top = np.take(np.argsort(-out, axis=axis, kind="stable"), np.arange(k), axis=axis)
    hit = (top == np.expand_dims(labels, axis)).any(axis=axis)
    return _per_sample_mean(hit)


def _agreement(out: np.ndarray, ref: np.ndarray, axis: int) -> np.ndarray:
    out, ref = _same_shape(out, ref)
    if _is_label_output(out):
        return _same_labels(out, ref)
    return _per_sample_mean(np.argmax(out, axis=axis) == np.argmax(ref, axis=axis))


def _cosine(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    out, ref = _same_shape(out, ref)
    a = out.reshape(len(out), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    # Two zero vectors are identical; one zero vector shares no direction with the other.
    cos = np.where((na == 0) & (nb == 0), 1.0, np.where((na == 0) | (nb == 0), 0.0, cos))
    return np.clip(cos, -1.0, 1.0)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _kl(out: np.ndarray, ref: np.ndarray, axis: int) -> np.ndarray:
    out, ref = _same_shape(out, ref)
    log_p, log_q = _log_softmax(ref, axis), _log_softmax(out, axis)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=axis)
    return _per_sample_mean(np.maximum(kl, 0.0))  # rounding can dip a hair below zero


def _probability_kl(out: np.ndarray, ref: np.ndarray, axis: int) -> np.ndarray:
    out, ref = _same_shape(out, ref)
    # Clipping keeps log finite where a probability underflowed to exactly zero.
    p = np.clip(ref.astype(np.float64), 1e-12, 1.0)
    q = np.clip(out.astype(np.float64), 1e-12, 1.0)
    kl = np.sum(p * (np.log(p) - np.log(q)), axis=axis)
    return _per_sample_mean(np.maximum(kl, 0.0))


def _same_shape(out: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    out, ref = np.asarray(out), np.asarray(ref)
    if out.shape != ref.shape:
        raise ValueError(f"outputs of shape {list(out.shape)} differ from the reference {list(ref.shape)}")
    return out, ref


def _relative_mse(out: Any, ref: Any) -> float:
    out, ref = _same_shape(out, ref)
    ref64 = ref.astype(np.float64)
    err = float(np.sum((out.astype(np.float64) - ref64) ** 2))
    energy = float(np.sum(ref64**2))
    # An all-zero reference has no scale to be relative to: report the plain squared error.
    return err / energy if energy > 0 else err


def _macro_f1(out: Any, labels: Any, axis: int) -> float:
    out = np.asarray(out)
    axis = axis % out.ndim
    if _is_label_output(out):
        truth, pred = np.asarray(labels).astype(np.int64).ravel(), out.astype(np.int64).ravel()
        if truth.size != pred.size or truth.size and (truth.min() < 0 or pred.min() < 0):
            raise DataError(f"labels of shape {list(np.shape(labels))} do not fit the predicted classes "
                            f"of shape {list(out.shape)}")
    else:
        truth = _class_labels(out, labels, axis).ravel()
        pred = np.argmax(out, axis=axis).ravel()
    n_classes = int(max(truth.max(initial=0), pred.max(initial=0))) + 1
    tp = np.bincount(truth[truth == pred], minlength=n_classes).astype(np.float64)
    support = np.bincount(truth, minlength=n_classes)
    predicted = np.bincount(pred, minlength=n_classes)
    present = (support + predicted) > 0  # classes seen in the labels or the predictions
    f1 = 2 * tp[present] / (support[present] + predicted[present])
    return float(f1.mean()) if f1.size else 0.0


@dataclass(frozen=True)
class _MeanOf:
    """The mean of per-sample scores (a plain class rather than a closure, so built-in metrics
    pickle and can be sent to worker processes)."""

    sample_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def __call__(self, out: Any, target: Any) -> float:
        return float(np.mean(self.sample_fn(out, target)))


def _mean_metric(
    name: str,
    sample_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    direction: Direction,
    target: TargetKind,
    output: int,
    bounds: tuple[float, float],
) -> Metric:
    return Metric(
        name=name,
        fn=_MeanOf(sample_fn),
        direction=direction,
        target=target,
        output=output,
        sample_fn=sample_fn,
        bounds=bounds,
    )


# -- public factories -----------------------------------------------------------------------------


def accuracy(k: int = 1, output: int = 0, axis: int = -1) -> Metric:
    """Top-``k`` accuracy against integer labels (or one-hot rows); ``axis`` is the class axis.

    Outputs with positions beyond the class axis (e.g. segmentation maps) score each sample by
    the fraction of its positions classified correctly.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    name = "accuracy" if k == 1 else f"top{k}_accuracy"
    return _mean_metric(
        name, partial(_topk_correct, k=k, axis=axis), "higher", "labels", output, (0.0, 1.0)
    )


def macro_f1(output: int = 0, axis: int = -1) -> Metric:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    return Metric("macro_f1", partial(_macro_f1, axis=axis), "higher", "labels", output)


def agreement(output: int = 0, axis: int = -1) -> Metric:
    """Fraction of samples whose top-1 class matches the unpruned model's."""
    return _mean_metric(
        "agreement", partial(_agreement, axis=axis), "higher", "reference", output, (0.0, 1.0)
    )


def cosine(output: int = 0) -> Metric:
    """Mean over samples of the cosine similarity between outputs and the reference."""
    return _mean_metric("cosine", _cosine, "higher", "reference", output, (-1.0, 1.0))


def relative_mse(output: int = 0) -> Metric:
    """Squared error summed over all samples, divided by the reference's summed squares."""
    return Metric("relative_mse", _relative_mse, "lower", "reference", output)


def kl_divergence(output: int = 0, axis: int = -1) -> Metric:
    """Mean KL(softmax(reference) || softmax(outputs)) along ``axis``, in nats."""
    return _mean_metric(
        "kl_divergence", partial(_kl, axis=axis), "lower", "reference", output, (0.0, math.inf)
    )


def probability_kl(output: int = 0, axis: int = -1) -> Metric:
    """Mean KL(reference || outputs) along ``axis``, in nats, for outputs that are already
    probability distributions (a model ending in Softmax).

    :func:`kl_divergence` applies a softmax first, which is right for logits but flattens the
    difference between two probability vectors (softmax of probabilities is close to uniform).
    """
    return _mean_metric(
        "probability_kl", partial(_probability_kl, axis=axis), "lower", "reference", output,
        (0.0, math.inf),
    )


def custom(
    fn: Callable[[Any, Any], float],
    name: str | None = None,
    direction: Direction = "higher",
    target: TargetKind = "labels",
    output: int | None = None,
) -> Metric:
    """Wrap any callable ``fn(outputs, labels_or_reference) -> float`` as a metric.

    With the default ``output=None`` ``fn`` gets the list of all model outputs and, for
    ``target="reference"``, the list of reference outputs; with an int it gets that output only.
    """
    fallback: str = getattr(fn, "__name__", "custom")
    return Metric(name or fallback, fn, direction, target, output)


_ALIASES: dict[str, Callable[[], Metric]] = {
    "accuracy": accuracy,
    "top1": accuracy,
    "macro_f1": macro_f1,
    "f1": macro_f1,
    "agreement": agreement,
    "cosine": cosine,
    "relative_mse": relative_mse,
    "mse": relative_mse,
    "kl": kl_divergence,
    "kl_divergence": kl_divergence,
    "probability_kl": probability_kl,
    "kl_probabilities": probability_kl,
}


def names() -> list[str]:
    """Metric names :func:`get` understands; ``top1``, ``top5``, ... stand for any ``topN``."""
    return sorted({*_ALIASES, "top5"}) + ["topN for any N"]


def get(metric: str | Metric) -> Metric:
    """A metric by name (``"accuracy"``, ``"top5"``, ``"f1"``, ``"agreement"``, ``"cosine"``,
    ``"mse"``, ``"kl"``, ``"probability_kl"`` ...); a :class:`Metric` is returned unchanged."""
    if isinstance(metric, Metric):
        return metric
    if not isinstance(metric, str):
        raise TypeError(f"expected a metric name or Metric, got {type(metric).__name__}")
    key = metric.strip().lower().replace("-", "_")
    if key in _ALIASES:
        return _ALIASES[key]()
    for prefix in ("top", "top_", "accuracy@", "acc@"):
        rest = key.removeprefix(prefix).removesuffix("_accuracy")
        if key.startswith(prefix) and rest.isdigit() and int(rest) >= 1:
            return accuracy(k=int(rest))
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(names())}")


def for_data(metric: str | Metric | None, has_labels: bool,
             outputs: Mapping[str, Any] | None = None, output: str | None = None) -> Metric:
    """The metric to judge data with or without labels by: the one named, or by default accuracy
    with labels, and without labels agreement with the original model (relative MSE when the
    judged output has no class axis, e.g. one probability per sample; cosine when its largest
    value barely stands out, :func:`weak_top1`: an embedding's top-1 says little). A metric that
    needs labels on data that has none is refused here, the one place this is checked.

    ``outputs`` (``{name: the unpruned model's values}``, in the order the model returns them)
    lets the output be chosen: ``output`` by name, else :func:`judged_output` picks it. A
    :class:`Metric` object keeps the output it was made with unless ``output`` is named.
    """
    index = None
    if outputs is not None and (output is not None or not isinstance(metric, Metric)):
        index = judged_output(outputs, output)[0]
    if metric is None:
        judged = None if outputs is None or index is None else np.asarray(list(outputs.values())[index])
        classes = judged is None or _is_label_output(judged) or (judged.ndim >= 2 and judged.shape[-1] > 1)
        metric = "accuracy" if has_labels else ("agreement" if classes else "relative_mse")
        if metric == "agreement" and judged is not None and weak_top1(judged):
            metric = "cosine"
    chosen = get(metric)
    if chosen.needs_labels and not has_labels:
        raise DataError(f"metric {chosen.name!r} needs labels and the data has none; name them (--labels KEY, "
                        "or labels= in the API) or use a fidelity metric such as 'agreement', 'cosine' or 'kl'")
    if index is not None and chosen.output is not None:
        chosen = replace(chosen, output=index)
    return chosen


#: Top-1 agreement says little about an output whose largest value barely stands out from the
#: next: embeddings and hidden states show a median gap of 0.1-0.3 standard deviations of their
#: values, trained classifiers' scores 1.5-3.3 (the benchmarks' encoders and classifiers).
WEAK_TOP1 = 0.5
#: :func:`top1_margin` reads at most this many positions (a language model's logits hold batch x
#: tokens x vocabulary values; in float64, all of them could take gigabytes).
_MARGIN_ROWS = 4096


def top1_margin(values: Any, axis: int = -1) -> float:
    """Median, over samples (and any other positions), of the gap between the largest and the next
    largest value along ``axis``, in standard deviations of the values there (inf when there are
    fewer than two values, or all are equal)."""
    v = np.moveaxis(np.asarray(values), axis, -1)
    if v.ndim == 0 or v.shape[-1] < 2 or v.size == 0:
        return math.inf
    v = v.reshape(-1, v.shape[-1])
    if len(v) > _MARGIN_ROWS:  # a median: evenly spaced positions tell it as well as all of them
        v = v[np.linspace(0, len(v) - 1, _MARGIN_ROWS).astype(np.int64)]
    v = v.astype(np.float64)
    top = np.partition(v, -2, axis=1)[:, -2:]
    spread = v.std(axis=1)
    varied = spread > 0
    if not varied.any():
        return math.inf
    gaps = (top[varied, 1] - top[varied, 0]) / spread[varied]
    return float(np.median(gaps))


def _score_margin(values: Any) -> float:
    """:func:`top1_margin` of a float output (scores); inf for any other (labels, ids, flags)."""
    array = np.asarray(values)
    return top1_margin(array) if array.dtype.kind == "f" else math.inf


def weak_top1(values: Any) -> bool:
    """Whether a float output's largest value barely stands out from the next
    (:func:`top1_margin` under :data:`WEAK_TOP1`): most likely an embedding or features, on which
    top-1 agreement says little."""
    return _score_margin(values) < WEAK_TOP1


def weak_top1_note(values: Any) -> str | None:
    """Why cosine, not agreement, was chosen by default for an output whose largest value barely
    stands out (:func:`weak_top1`), for the report; None for any other output."""
    margin = _score_margin(values)  # once: the margin sorts every position read
    if margin >= WEAK_TOP1:
        return None
    return (f"cosine, not top-1 agreement, since its largest value barely stands out (median gap to the "
            f"next: {margin:.2f} standard deviations of the values); --metric agreement "
            f"(metric='agreement') judges by top-1 all the same")


def label_outputs(outputs: Mapping[str, Any]) -> dict[str, str]:
    """Outputs that hold predicted classes rather than scores, ``{name: why}``: integer (or
    boolean) outputs, and outputs equal to the argmax of another output over its last axis (the
    label output classifiers emit next to their probabilities)."""
    arrays = {k: np.asarray(v) for k, v in outputs.items() if isinstance(v, np.ndarray)}
    found = {}
    for name, a in arrays.items():
        if a.dtype.kind in "biu":
            found[name] = f"integer ({a.dtype})"
        for other, b in arrays.items():
            if (other != name and b.dtype.kind == "f" and b.ndim == a.ndim + 1 and b.shape[:-1] == a.shape
                    and b.shape[-1] > 1 and np.array_equal(np.argmax(b, axis=-1), a)):
                found[name] = f"the argmax of {other!r}"
                break
    return found


def judged_output(outputs: Mapping[str, Any], output: str | None = None) -> tuple[int, str]:
    """Which output a metric reads: (index into ``outputs``, why that one).

    ``output`` names it; otherwise the first float tensor output that is not a label output
    (:func:`label_outputs`), so a classifier's probabilities are judged rather than its predicted
    labels; the first output when there is no such output.
    """
    names = list(outputs)
    if output is not None:
        if output not in outputs:
            raise DataError(f"--metric-output {output!r} (metric_output=): the model has no tensor output of that "
                            f"name; its outputs are {names}")
        return names.index(output), "named"
    labels = label_outputs(outputs)
    for i, (name, value) in enumerate(outputs.items()):
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and name not in labels:
            skipped = [f"{k!r} ({why})" for k, why in labels.items()]
            why = "the first float output" + (f"; label outputs not judged: {', '.join(skipped)}" if skipped else "")
            return i, why
    return 0, "the first output (no float output that is not a label output)"
