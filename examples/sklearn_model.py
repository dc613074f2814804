"""Prune a scikit-learn model converted to ONNX with skl2onnx, with pyprune's Python API.

A two-hidden-layer ``MLPClassifier`` is trained on scikit-learn's bundled digits and converted with
``skl2onnx`` (MatMul/Add/Relu layers, Softmax, then ArgMax and an ``ai.onnx.ml`` label lookup).
pyprune removes hidden neurons of both layers with greedy search until 80% of the parameters
are left, while calibration accuracy may drop by at most two points. The label and probability
outputs keep their names, types and shapes; the pruned model still runs wherever the original did.

Run: ``python examples/sklearn_model.py [--out DIR]`` (needs ``pip install scikit-learn
skl2onnx``; pyprune itself needs neither).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

import pyprune as pp
from pyprune import metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sklearn-out"), help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_rest, y_train, y_rest = train_test_split(x, digits.target, test_size=0.4, random_state=0)
    x_calib, x_test, y_calib, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=400, random_state=0).fit(x_train, y_train)

    # zipmap=False: probabilities as a plain [N, 10] tensor rather than a list of dicts.
    onnx_model = to_onnx(clf, x_train[:1], options={"zipmap": False}, target_opset=17)
    original = args.out / "mlp.onnx"
    original.write_bytes(onnx_model.SerializeToString())

    # The converted graph's input is called "X"; outputs are "label" and "probabilities".
    model = pp.load(original)
    data = pp.Dataset({"X": x_calib}, labels=y_calib)
    result = pp.prune(model, data, granularity="channel", importance="l2", strategy="greedy",
                      target=pp.Params(0.8), max_drop=0.02,
                      metric=metrics.accuracy(output=1))  # judge the probabilities output
    pruned = result.model.save(args.out / "mlp.pruned.onnx")
    print(result.report)

    def test_accuracy(path: Path) -> float:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        label = session.run(["label"], {"X": x_test})[0]
        return float((label == y_test).mean())

    print(f"\nscikit-learn test accuracy {clf.score(x_test, y_test):.4f}")
    print(f"params     {model.params():>8,} -> {result.model.params():>8,}")
    print(f"MACs       {model.macs():>8,} -> {result.model.macs():>8,}")
    print(f"test acc.  {test_accuracy(original):>8.4f} -> {test_accuracy(pruned):>8.4f}")
    print(f"wrote {pruned}")


if __name__ == "__main__":
    main()
