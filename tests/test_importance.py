"""Importance scores: one per unit for every name on generated models, and the magnitude,
activation-aware, reduction and normalisation arithmetic against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyprune import importance
from pyprune.data import Dataset
from pyprune.graph import DependencyGraph, Model, load

from _models import CATALOGUE, Builder, gemm_mlp, random_inputs  # noqa: E402  (tests/ is on sys.path)

MODELS = ("conv_stack", "flatten_gemm", "transformer_ffn", "se_in_residual", "gemm_variants", "split_slice")


def dataset_for(model: Model, n: int = 12) -> Dataset:
    return Dataset(random_inputs(model.proto, batch=n, seed=1))


@pytest.fixture(scope="module", params=MODELS)
def generated(request) -> tuple[str, Model, list, Dataset]:
    model = load(CATALOGUE[request.param].build())
    groups = [g for g in DependencyGraph(model).groups if g.prunable]
    return request.param, model, groups, dataset_for(model)


@pytest.mark.parametrize("name", importance.IMPORTANCES)
def test_every_importance_scores_every_unit(generated, name):
    _, model, groups, data = generated
    scores = importance.all_group_scores(model, groups, name, dataset=data, seed=4)
    assert set(scores) == {g.id for g in groups}
    for g in groups:
        s = scores[g.id]
        assert s.shape == (g.size,) and s.dtype == np.float64
        assert np.all(np.isfinite(s)) and np.all(s >= 0)


# -- a Gemm MLP whose arithmetic numpy can redo --------------------------------------------------


def mlp() -> tuple[Model, dict[str, np.ndarray]]:
    """x[8] -> Gemm(8x6) -> Relu -> Gemm(transB, 5x6) -> Relu -> Gemm(5x3)."""
    model = load(gemm_mlp((8, 6, 5, 3), seed=7, trans_b=(1,)))
    gemms = [n for n in model.nodes if n.op_type == "Gemm"]
    return model, {f"w{i}": model.weight(n.input[1]) for i, n in enumerate(gemms)} | {
        f"b{i}": model.weight(n.input[2]) for i, n in enumerate(gemms)}


@pytest.fixture(scope="module")
def small():
    model, w = mlp()
    groups = {g.root: g for g in DependencyGraph(model).groups if g.prunable}
    first, second = (groups[n.name] for n in model.nodes if n.op_type == "Gemm" and n.name in groups)
    return model, w, first, second


NORMS = {"l1": lambda a, axis: np.abs(a).sum(axis=axis), "l2": lambda a, axis: np.sqrt((a * a).sum(axis=axis)),
         "linf": lambda a, axis: np.abs(a).max(axis=axis)}


@pytest.mark.parametrize("name", ["l1", "l2", "linf"])
@pytest.mark.parametrize("reduce", importance.REDUCTIONS)
def test_magnitude_and_reductions_match_numpy(small, name, reduce):
    model, w, first, second = small
    norm = NORMS[name]
    # first group: w0 columns (producer, [8, 6]) and w1 columns (consumer, transB [5, 6]); biases left out
    parts = np.stack([norm(w["w0"], 0), norm(w["w1"], 0)])
    expected = {"sum": parts.sum(0), "mean": parts.mean(0), "max": parts.max(0)}[reduce]
    got = importance.group_scores(model, first, name, reduce=reduce, normalize="none")
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # second group: w1 rows (producer, transB) and w2 rows (consumer, [5, 3])
    parts = np.stack([norm(w["w1"], 1), norm(w["w2"], 1)])
    expected = {"sum": parts.sum(0), "mean": parts.mean(0), "max": parts.max(0)}[reduce]
    np.testing.assert_allclose(importance.group_scores(model, second, name, reduce=reduce, normalize="none"),
                               expected, rtol=1e-6)


def test_a_flattened_channel_owns_a_block_of_columns():
    model = load(CATALOGUE["flatten_gemm"].build())
    conv = next(g for g in DependencyGraph(model).groups if g.op_type == "Conv")
    cw = model.weight(model.node(conv.root).input[1])  # [4, 2, 3, 3]
    gemm = next(n for n in model.nodes if n.op_type == "Gemm")
    gw = model.weight(gemm.input[1])  # transB [7, 36]: channel c owns columns 9c .. 9c+8
    expected = [np.linalg.norm(cw[c]) + np.linalg.norm(gw[:, 9 * c: 9 * c + 9]) for c in range(4)]
    got = importance.group_scores(model, conv, "l2", normalize="none")
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@settings(max_examples=12, deadline=None)
@given(cin=st.integers(1, 4), cout=st.integers(2, 7), c2=st.integers(1, 5), k=st.sampled_from([1, 3]),
       name=st.sampled_from(["l1", "l2", "linf"]), reduce=st.sampled_from(importance.REDUCTIONS))
def test_conv_scores_match_numpy_for_any_shape(cin, cout, c2, k, name, reduce):
    b = Builder(opset=13, seed=cin * 100 + cout * 10 + c2)
    h = b.relu(b.conv(b.input([cin, 5, 5]), cin, cout, k=k))
    model = load(b.model([b.conv(h, cout, c2, k=1, bias=False)]))
    group = next(g for g in DependencyGraph(model).groups if g.prunable)
    convs = [n for n in model.nodes if n.op_type == "Conv"]
    w1, w2 = model.weight(convs[0].input[1]), model.weight(convs[1].input[1])
    norm = NORMS[name]
    parts = np.stack([norm(w1.reshape(cout, -1), 1), norm(np.moveaxis(w2, 1, 0).reshape(cout, -1), 1)])
    expected = {"sum": parts.sum(0), "mean": parts.mean(0), "max": parts.max(0)}[reduce]
    got = importance.group_scores(model, group, name, reduce=reduce, normalize="none")
    assert got.shape == (cout,)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def lamp(s: np.ndarray) -> np.ndarray:
    sq = s.astype(np.float64) ** 2
    return np.array([sq[i] / sq[sq >= sq[i]].sum() if sq[sq >= sq[i]].sum() > 0 else 0.0
                     for i in range(len(s))])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 12), elements=st.floats(0, 100, allow_subnormal=False)),
       st.sampled_from(importance.NORMALIZATIONS))
def test_normalisations_match_numpy(scores, how):
    got = importance.normalize_scores(scores, how)
    if how == "none":
        expected = scores
    elif how == "lamp":
        expected = lamp(scores)
    else:
        scale = scores.mean() if how == "mean" else scores.max()
        expected = scores / scale if scale > 0 else scores
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-300)
    assert got is not scores


def test_lamp_keeps_the_order_and_the_largest_unit_scores_one():
    s = np.array([3.0, 1.0, 2.0, 5.0])
    out = importance.normalize_scores(s, "lamp")
    assert list(np.argsort(out)) == list(np.argsort(s))
    assert out[3] == 1.0
    assert out[1] == pytest.approx(1 / (1 + 4 + 9 + 25))
    tied = importance.normalize_scores(np.array([2.0, 1.0, 2.0]), "lamp")
    np.testing.assert_allclose(tied, [0.5, 1 / 9, 0.5])  # equal scores, equal LAMP scores


# -- activation-aware -------------------------------------------------------------------------


def forward_hidden(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The first hidden activation (after ReLU), where the first group enters the second Gemm."""
    return np.maximum(x.astype(np.float64) @ w["w0"] + w["b0"], 0.0)


def test_activation_scores_use_the_data(small):
    model, w, first, _ = small
    x = np.random.default_rng(3).standard_normal((40, 8)).astype(np.float32)
    h = forward_hidden(w, x)
    data = Dataset({"x": x})
    mean = importance.all_group_scores(model, [first], "mean_activation", dataset=data, normalize="none")
    np.testing.assert_allclose(mean[first.id], np.abs(h).mean(0), rtol=1e-5)
    apoz = importance.all_group_scores(model, [first], "apoz", dataset=data, normalize="none")
    np.testing.assert_allclose(apoz[first.id], 1.0 - (h == 0).mean(0), rtol=1e-6)
    wanda = importance.all_group_scores(model, [first], "wanda", dataset=data, normalize="none")
    # consumer (transB [5, 6]) columns, each weighted by the L2 norm of its input feature
    np.testing.assert_allclose(wanda[first.id], np.abs(w["w1"]).sum(0) * np.linalg.norm(h, axis=0), rtol=1e-5)
    # other data, other scores
    shifted = Dataset({"x": x + 2.0})
    assert not np.allclose(importance.all_group_scores(model, [first], "wanda", dataset=shifted)[first.id],
                           importance.all_group_scores(model, [first], "wanda", dataset=data)[first.id])


def test_activation_scores_need_data(small):
    model, _, first, _ = small
    assert importance.needs_data("wanda") and not importance.needs_data("l2")
    with pytest.raises(ValueError, match="needs data"):
        importance.all_group_scores(model, [first], "apoz")
    with pytest.raises(ValueError, match="activation statistics"):
        importance.group_scores(model, first, "mean_activation")


def test_random_is_seeded(small):
    model, _, first, second = small
    a = importance.all_group_scores(model, [first, second], "random", seed=1)
    b = importance.all_group_scores(model, [first, second], "random", seed=1)
    c = importance.all_group_scores(model, [first, second], "random", seed=2)
    for g in (first, second):
        np.testing.assert_array_equal(a[g.id], b[g.id])
        assert not np.array_equal(a[g.id], c[g.id])
    assert not np.array_equal(np.sort(a[first.id])[:5], np.sort(a[second.id])[:5])  # per-group streams
    # a group's scores do not depend on which other groups are scored with it
    np.testing.assert_array_equal(importance.all_group_scores(model, [second], "random", seed=1)[second.id],
                                  a[second.id])


def test_fpgm_scores_the_redundant_filter_lowest(small):
    model, w, first, _ = small
    raw = importance.group_scores(model, first, "fpgm", normalize="none")
    cols = w["w0"].T.astype(np.float64)  # one filter per unit
    distances = np.array([np.linalg.norm(cols - c, axis=1).sum() for c in cols])
    np.testing.assert_allclose(raw, distances, rtol=1e-5)


def test_layer_and_weight_scores(small):
    model, w, _, _ = small
    names = [n.input[1] for n in model.nodes if n.op_type == "Gemm"]
    scores = importance.weight_scores(model, names, "l2")
    for name in names:
        np.testing.assert_allclose(scores[name], model.weight(name) ** 2, rtol=1e-6)
    np.testing.assert_allclose(importance.weight_scores(model, names[:1], "l1")[names[0]], np.abs(w["w0"]))
    a = importance.weight_scores(model, names, "random", seed=5)
    b = importance.weight_scores(model, names, "random", seed=5)
    assert all(np.array_equal(a[k], b[k]) and a[k].shape == model.weight(k).shape for k in names)
    norms = np.arange(1, 9, dtype=np.float32)  # input features of the first Gemm
    wanda = importance.weight_scores(model, names[:1], "wanda", input_norms={names[0]: (norms, 0)})
    np.testing.assert_allclose(wanda[names[0]], np.abs(w["w0"]) * norms[:, None], rtol=1e-6)
    with pytest.raises(ValueError, match="single weights"):
        importance.weight_scores(model, names, "fpgm")
    with pytest.raises(ValueError, match="norms of its input"):
        importance.weight_scores(model, names, "wanda")


def test_layer_scores_are_magnitude_per_parameter():
    model = load(CATALOGUE["transformer_ffn"].build())
    layers = [layer for layer in DependencyGraph(model).layers if layer.prunable]
    scores = importance.layer_scores(model, layers, "l1")
    for layer in layers:
        weights = {i for n in layer.nodes for i in model.node(n).input if model.is_weight(i)}
        arrays = [model.weight(i) for i in weights if model.weight(i).dtype.kind == "f"]
        total = sum(np.abs(a).sum() for a in arrays)
        assert scores[layer.id] == pytest.approx(total / sum(a.size for a in arrays), rel=1e-5)
    assert importance.layer_scores(model, layers, "random", seed=3) == importance.layer_scores(
        model, layers, "random", seed=3)


@pytest.mark.parametrize("call, error, needle", [
    (lambda m, g: importance.group_scores(m, g, "l3"), ValueError, "unknown importance 'l3'; known: l1, l2"),
    (lambda m, g: importance.group_scores(m, g, 2), TypeError, "must be a name"),
    (lambda m, g: importance.group_scores(m, g, "l2", reduce="median"), ValueError, "reduce must be one of"),
    (lambda m, g: importance.group_scores(m, g, "l2", normalize="z"), ValueError, "normalize must be one of"),
    (lambda m, g: importance.needs_data("gradient"), ValueError, "unknown importance"),
])
def test_bad_names_raise_clear_errors(small, call, error, needle):
    model, _, first, _ = small
    with pytest.raises(error, match=needle):
        call(model, first)


def test_aliases():
    assert importance.needs_data("Mean-Activation") and importance.needs_data("activation")
    model, _ = mlp()
    g = next(g for g in DependencyGraph(model).groups if g.prunable)
    np.testing.assert_array_equal(importance.group_scores(model, g, "magnitude"),
                                  importance.group_scores(model, g, "l1"))

