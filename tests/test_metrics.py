"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprune import metrics

LOGITS = np.array(
    [
        [2.0, 1.0, 0.0],  # predicts 0
        [0.0, 3.0, 1.0],  # predicts 1
        [1.0, 0.0, 2.0],  # predicts 2, second choice 0
        [0.5, 2.0, 1.0],  # predicts 1, second choice 2
    ],
    dtype=np.float32,
)
LABELS = np.array([0, 1, 0, 2])


def test_top1_accuracy():
    assert metrics.accuracy()([LOGITS], LABELS) == pytest.approx(0.5)


def test_top2_accuracy():
    assert metrics.accuracy(k=2)([LOGITS], LABELS) == pytest.approx(1.0)
    assert metrics.get("top2").name == "top2_accuracy"


def test_accuracy_accepts_one_hot_labels():
    assert metrics.accuracy()([LOGITS], np.eye(3)[LABELS]) == pytest.approx(0.5)


def test_accuracy_rejects_labels_that_do_not_fit():
    with pytest.raises(ValueError, match=r"labels of shape \[4, 2\] do not fit outputs of shape \[4, 3\]"):
        metrics.accuracy()([LOGITS], np.zeros((4, 2)))


def test_segmentation_accuracy_counts_positions():
    out = np.zeros((1, 2, 1, 4), np.float32)  # [N, C, H, W], class axis 1
    out[0, 1, 0, :2] = 1.0  # predicts class 1 at the first two pixels, class 0 elsewhere
    labels = np.array([[[1, 0, 0, 0]]])
    assert metrics.accuracy(axis=1)([out], labels) == pytest.approx(0.75)


def test_macro_f1():
    # predictions 0,1,2,1 vs labels 0,1,0,2:
    # class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 1, fn 0 -> 2/3; class 2: tp 0 -> 0.
    assert metrics.macro_f1()([LOGITS], LABELS) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_agreement():
    reference = LOGITS[[0, 1, 3, 2]]  # rows 2 and 3 swapped: two of four top-1 classes differ
    assert metrics.agreement()([LOGITS], [reference]) == pytest.approx(0.5)


def test_cosine():
    out = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    ref = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    # orthogonal -> 0, parallel -> 1, both zero -> 1
    assert metrics.cosine()([out], [ref]) == pytest.approx(2 / 3)


def test_relative_mse():
    out = np.array([[1.0, 2.0], [3.0, 5.0]])
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert metrics.relative_mse()([out], [ref]) == pytest.approx(1.0 / (1 + 4 + 9 + 16))
    assert metrics.get("mse").direction == "lower"


def test_kl_divergence():
    out = np.log(np.array([[0.5, 0.5]]))
    ref = np.log(np.array([[0.9, 0.1]]))
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert metrics.kl_divergence()([out], [ref]) == pytest.approx(expected)


def test_probability_kl_reads_probabilities_as_they_are():
    out = np.array([[0.5, 0.5], [0.2, 0.8]])
    ref = np.array([[0.9, 0.1], [0.2, 0.8]])
    expected = (0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)) / 2  # second sample: 0
    metric = metrics.get("probability_kl")
    assert metric.name == "probability_kl" and metric.direction == "lower" and not metric.needs_labels
    assert metric([out], [ref]) == pytest.approx(expected)
    np.testing.assert_allclose(metric.sample_scores([out], [ref]), [2 * expected, 0.0], atol=1e-12)
    # softmax-based KL of the same arrays treats them as logits and sees a much smaller difference
    assert metrics.kl_divergence()([out], [ref]) < expected / 4
    # a zero probability in the outputs is clipped, not infinite
    assert math.isfinite(metric([np.array([[1.0, 0.0]])], [np.array([[0.5, 0.5]])]))
    assert "probability_kl" in metrics.names()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), c=st.integers(2, 5), seed=st.integers(0, 1000))
def test_fidelity_of_identical_outputs(n, c, seed):
    x = np.random.default_rng(seed).normal(size=(n, c)).astype(np.float32)
    assert metrics.agreement()([x], [x]) == 1.0
    assert metrics.cosine()([x], [x]) == pytest.approx(1.0)
    assert metrics.relative_mse()([x], [x]) == 0.0
    assert metrics.kl_divergence()([x], [x]) == pytest.approx(0.0, abs=1e-12)
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    assert metrics.probability_kl()([p], [p]) == pytest.approx(0.0, abs=1e-12)


def test_output_selection():
    other = np.zeros((4, 3), np.float32)
    assert metrics.accuracy(output=1)([other, LOGITS], LABELS) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="reads output 2, the model has 2"):
        metrics.accuracy(output=2)([other, LOGITS], LABELS)


def test_custom_metric_sees_all_outputs():
    metric = metrics.custom(lambda outs, ref: float(len(outs) + len(ref)), name="count", direction="lower",
                            target="reference")
    assert metric([LOGITS, LOGITS], [LOGITS]) == 3.0
    assert metric.name == "count" and metric.is_better(1.0, 2.0) and metric.meets(2.0, 2.0)


def test_bad_direction_and_unknown_names():
    with pytest.raises(ValueError, match="direction must be 'higher' or 'lower'"):
        metrics.custom(lambda o, t: 0.0, direction="up")
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        metrics.get("nope")


def test_best_possible_bounds_the_final_value():
    acc = metrics.accuracy()
    # 1 of 4 correct so far, 4 of 10 remaining could all be correct: (1 + 6) / 10
    assert acc.best_possible(1.0, 4, 10) == pytest.approx(0.7)
    kl = metrics.kl_divergence()
    assert kl.best_possible(2.0, 4, 10) == pytest.approx(0.2)


# -- which output a metric reads ---------------------------------------------------------------------


PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]], np.float32)


def test_label_outputs_are_integers_or_the_argmax_of_another_output():
    outputs = {"label": PROBS.argmax(1), "as_float": PROBS.argmax(1).astype(np.float32), "probs": PROBS,
               "score": PROBS[:, 0]}
    found = metrics.label_outputs(outputs)
    assert set(found) == {"label", "as_float"} and "argmax of 'probs'" in found["as_float"]
    assert metrics.judged_output(outputs) == (2, "the first float output; label outputs not judged: "
                                              "'label' (the argmax of 'probs'), 'as_float' (the argmax of 'probs')")
    assert metrics.judged_output(outputs, "score") == (3, "named")
    with pytest.raises(ValueError, match=r"--metric-output 'logits' \(metric_output=\).*\['label', 'as_float'"):
        metrics.judged_output(outputs, "logits")


def test_for_data_reads_the_probabilities_of_a_classifier_that_outputs_labels_first():
    # skl2onnx's order: labels [N] (int64), then probabilities [N, C]; labels of the same shape as
    # the label output were once taken for one-hot rows, scoring 1.0 whatever the model did.
    outputs = {"label": PROBS.argmax(1).astype(np.int64), "probabilities": PROBS}
    chosen = metrics.for_data(None, has_labels=True, outputs=outputs)
    assert chosen.name == "accuracy" and chosen.output == 1
    truth = np.array([0, 1, 0, 2])
    assert chosen(list(outputs.values()), truth) == pytest.approx(0.5)
    # a Metric object keeps its own output unless one is named
    assert metrics.for_data(metrics.accuracy(), True, outputs=outputs).output == 0
    assert metrics.for_data(metrics.accuracy(), True, outputs=outputs, output="probabilities").output == 1


def test_predicted_classes_are_compared_as_classes():
    label = np.array([0, 1, 2, 1], np.int64)
    assert metrics.accuracy()([label], np.array([0, 1, 0, 2])) == pytest.approx(0.5)
    assert metrics.agreement()([label], [np.array([0, 1, 2, 2], np.int64)]) == pytest.approx(0.75)
    assert metrics.macro_f1()([label], np.array([0, 1, 2, 1])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="scores per class"):
        metrics.accuracy(k=2)([label], np.array([0, 1, 0, 2]))


def test_without_labels_an_output_without_class_axis_is_judged_by_relative_mse():
    assert metrics.for_data(None, False, outputs={"prob": PROBS[:, :1]}).name == "relative_mse"
    assert metrics.for_data(None, False, outputs={"probs": PROBS}).name == "agreement"
    assert metrics.for_data(None, False).name == "agreement"  # outputs unknown: the default
