"""The top-level API: every public name resolves, and the documented short path works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import pyprune as pp

ASSETS = Path(pp.__file__).parent / "assets"


def test_every_public_name_resolves_and_nothing_private_is_listed() -> None:
    for name in pp.__all__:
        assert getattr(pp, name) is not None, name
        assert not name.startswith("_") or name == "__version__", name
    namespace: dict[str, object] = {}
    exec("from pyprune import *", namespace)
    assert set(pp.__all__) <= set(namespace)


@pytest.mark.parametrize("module", [pp.graph, pp.surgery, pp.importance, pp.evaluate, pp.metrics,
                                    pp.search, pp.core])
def test_submodules_list_their_public_names(module: object) -> None:
    names = module.__all__
    assert names and all(hasattr(module, n) for n in names)


def test_the_documented_short_path(tmp_path: Path) -> None:
    model = pp.load(ASSETS / "digits_mlp.onnx")
    npz = np.load(ASSETS / "digits.npz")
    np.savez(tmp_path / "calib.npz", input=npz["input"], y=npz["label"])
    data = pp.Dataset.from_npz(tmp_path / "calib.npz", labels="y")

    result = pp.prune(model, data, granularity="channel", importance="l2", strategy="oneshot",
                      target=pp.MACs(0.8), max_drop=None, quiet=True, measure_latency=False)

    assert result.met
    assert result.model.macs() <= 0.8 * model.macs()
    out = tmp_path / "model.pruned.onnx"
    result.model.save(out)
    onnx.checker.check_model(str(out), full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"input": npz["test_input"][:5]})[0]
    assert probabilities.shape == (5, 10)
    assert "MACs" in str(result.report)


def test_unknown_strategy_is_a_clear_error() -> None:
    model = pp.load(ASSETS / "digits_mlp.onnx")
    with pytest.raises(ValueError, match="'strategy' must be one of"):
        pp.prune(model, None, strategy="annealing", quiet=True)


def test_the_source_tree_says_it_shadows_the_installed_package() -> None:
    """Python started in the repository root imports the source folder, which has no compiled core."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", "import pyprune; pyprune.load"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        return  # an editable or in-place build serves the core to the source tree: nothing is shadowed
    assert "shadows the installed package" in proc.stderr, proc.stderr


def _embedding_model() -> onnx.ModelProto:
    """A small MLP whose output is 48 features of random weights: no value stands out, as in an
    embedding."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
              for s, n in (((16, 32), "w1"), ((32, 48), "w2")))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", k]) for n, k in (("x", 16), ("y", 48))]
    graph = helper.make_graph(nodes, "features", io[:1], io[1:], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_output_whose_largest_value_barely_stands_out_is_judged_by_cosine_by_default() -> None:
    """Judged by default, an embedding-like output gets cosine (its top-1 says little) and a note
    that says why; a classifier's scores get agreement; a metric the user named is kept."""
    data = pp.Dataset({"x": np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)})

    def judged(model, **kw) -> tuple[str, list[str]]:
        result = pp.prune(model, data, strategy="oneshot", target=pp.MACs(0.9), max_drop=None, quiet=True,
                          measure_latency=False, **kw)
        return result.report.metric_name, [n for n in result.report.notes if "barely stands out" in n]

    name, weak = judged(_embedding_model())
    assert name == "cosine"
    assert len(weak) == 1 and weak[0].startswith("metric cosine judges output 'y'") and "--metric agreement" in weak[0]
    assert judged(_embedding_model(), metric="cosine") == ("cosine", [])
    assert judged(_embedding_model(), metric="agreement") == ("agreement", [])  # named: the user chose it
    digits = pp.Dataset({"input": np.load(ASSETS / "digits.npz")["input"][:64]})
    result = pp.prune(pp.load(ASSETS / "digits_mlp.onnx"), digits, strategy="oneshot", target=pp.MACs(0.9),
                      max_drop=None, quiet=True, measure_latency=False)
    assert result.report.metric_name == "agreement"  # a trained classifier's scores, without labels
    assert not any("barely stands out" in n for n in result.report.notes)
    features = np.random.default_rng(0).standard_normal((32, 48)).astype(np.float32)  # gap about 0.28
    assert pp.metrics.weak_top1(features) and not pp.metrics.weak_top1(np.eye(4, dtype=np.float32) * 5)
    assert not pp.metrics.weak_top1(features.astype(np.int64))  # not scores


def test_top1_margin_measures_how_far_the_largest_value_stands_out() -> None:
    assert pp.metrics.top1_margin(np.array([[0.0, 0.0, 3.0, 0.0]])) == pytest.approx(3.0 / np.std([0, 0, 3, 0]))
    assert pp.metrics.top1_margin(np.array([[1.0, 1.0, 1.0]])) == float("inf")  # nothing to tell apart
    assert pp.metrics.top1_margin(np.array([[2.0]])) == float("inf")  # one value
    # per position of a [batch, tokens, features] output, the median over all of them
    values = np.zeros((2, 3, 4))
    values[..., 0] = 1.0
    assert pp.metrics.top1_margin(values) == pytest.approx(1.0 / np.std([1, 0, 0, 0]))
    # many positions (an LM's logits): an evenly spaced part of them is read, in the same units;
    # two thirds of the rows are weak, and the median follows them
    many = np.tile(np.array([0.0, 0.0, 3.0, 0.0], np.float32), (60_000, 1))
    assert pp.metrics.top1_margin(many) == pytest.approx(3.0 / np.std([0, 0, 3, 0]))
    many[20_000:] = [0.0, 2.9, 3.0, 0.0]
    assert pp.metrics.top1_margin(many) == pytest.approx(0.1 / np.std([0, 2.9, 3, 0]), rel=1e-5)


def test_unknown_metric_lists_topn_as_a_pattern() -> None:
    with pytest.raises(ValueError, match="topN for any N") as info:
        pp.metrics.get("topK")
    assert "topK" not in str(info.value).split("known:")[1]
    assert pp.metrics.get("top7").name == "top7_accuracy"


def _digits_problem_notes(labels_from_model: bool, max_drop: float | None) -> list[str]:
    model = pp.load(ASSETS / "digits_mlp.onnx")
    npz = np.load(ASSETS / "digits.npz")
    x = npz["input"][:200]
    labels = npz["label"][:200]
    if labels_from_model:  # what a model trained on these samples scores
        session = ort.InferenceSession(str(ASSETS / "digits_mlp.onnx"), providers=["CPUExecutionProvider"])
        labels = session.run(None, {"input": x})[0].argmax(axis=1)
    result = pp.prune(model, pp.Dataset({"input": x}, labels=labels), strategy="oneshot", target=pp.MACs(0.9),
                      max_drop=max_drop, quiet=True, measure_latency=False)
    return result.report.notes


def test_a_perfect_unpruned_score_on_the_checked_data_is_noted() -> None:
    """A constraint checked on samples the model scores perfectly on (its own training data) says
    little about unseen data; the report says so, and only then."""
    assert any("perfect accuracy" in n for n in _digits_problem_notes(True, 0.01))
    assert not any("perfect accuracy" in n for n in _digits_problem_notes(True, None))  # no constraint
    assert not any("perfect accuracy" in n for n in _digits_problem_notes(False, 0.01))  # true labels: not perfect
