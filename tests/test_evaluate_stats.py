"""Activation statistics against numpy on captured tensors; latency statistics."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from pyprune.data import Dataset
from pyprune.evaluate import RunningChannelStats, activation_stats, measure_latency
from pyprune.graph import MaskPoint, load


def _model(batch: int | str = "N") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "W2"], ["y"], name="fc"),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=(4, 2)).astype(np.float32), "W2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _captured(proto: onnx.ModelProto, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, {"x": x})))


def _numpy_stats(t: np.ndarray, axis: int) -> dict[str, np.ndarray]:
    flat = np.moveaxis(t.astype(np.float64), axis, 0).reshape(t.shape[axis], -1)
    return {
        "mean": flat.mean(1),
        "var": flat.var(1),
        "l2_norm": np.sqrt((flat**2).sum(1)),
        "mean_abs": np.abs(flat).mean(1),
        "zero_fraction": (flat == 0).mean(1),
    }


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_activation_stats_equal_numpy(batch_size):
    model = load(_model())
    x = np.random.default_rng(1).normal(size=(7, 3, 5, 5)).astype(np.float32)
    stats = activation_stats(
        model,
        Dataset(x),
        {"r1": 1, "c1": 1, "f": -1, "x": 1},
        batch_size=batch_size,
        threads=1,
    )
    captured = _captured(model.proto, x, ["r1", "c1", "f"]) | {"x": x}
    for name, axis in [("r1", 1), ("c1", 1), ("f", 1), ("x", 1)]:
        expected = _numpy_stats(captured[name], axis)
        got = stats[name]
        assert got.count == captured[name].size // captured[name].shape[axis]
        for field, value in expected.items():
            np.testing.assert_allclose(getattr(got, field), value, rtol=1e-6, atol=1e-9, err_msg=f"{name}.{field}")
    assert stats["r1"].zero_fraction.max() > 0  # a ReLU output has zeros, so APoZ is non-trivial


def test_mask_points_choose_tensor_and_axis():
    model = load(_model())
    x = np.ones((2, 3, 5, 5), np.float32)
    point = MaskPoint("fc", 0, "f", 1, 2, np.arange(4))
    stats = activation_stats(model, Dataset(x), [point])
    assert list(stats) == ["f"] and stats["f"].axis == 1 and stats["f"].mean.shape == (4,)


def test_activation_errors_name_the_tensor():
    model = load(_model())
    data = Dataset(np.ones((2, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="'W1' is a weight, not an activation"):
        activation_stats(model, data, ["W1"])
    with pytest.raises(ValueError, match="no value named 'nothing'"):
        activation_stats(model, data, ["nothing"])
    with pytest.raises(ValueError, match=r"rank 2; channel axis 3 is out of range"):
        activation_stats(model, data, {"f": 3})


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    offset=st.sampled_from([0.0, 1e4, 1e7]),
    seed=st.integers(0, 100),
)
def test_running_stats_are_stable_under_any_split(sizes, offset, seed):
    rng = np.random.default_rng(seed)
    chunks = [(offset + rng.normal(size=(n, 3, 2))).astype(np.float64) for n in sizes]
    running = RunningChannelStats("t", 1)
    for chunk in chunks:
        running.update(chunk)
    result = running.result()
    everything = np.concatenate(chunks)
    expected = _numpy_stats(everything, 1)
    np.testing.assert_allclose(result.mean, expected["mean"], rtol=1e-12)
    # The variance of values around a large offset survives the streaming (no sum-of-squares cancellation).
    np.testing.assert_allclose(result.var, expected["var"], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("batch", ["N", 2])
def test_latency_statistics_are_sane(batch):
    model = load(_model(batch))
    lat = measure_latency(model, batch_size=4, threads=1, warmup=2, runs=9)
    assert lat.runs == 9 and lat.warmup == 2 and lat.threads == 1
    assert lat.batch_size == (4 if batch == "N" else 2)  # a fixed batch dimension wins
    assert 0 < lat.min_ms <= lat.q1_ms <= lat.median_ms <= lat.q3_ms
    assert lat.iqr_ms == pytest.approx(lat.q3_ms - lat.q1_ms) and lat.iqr_ms >= 0
    assert "median" in str(lat)


def test_latency_rejects_bad_settings():
    model = load(_model())
    with pytest.raises(ValueError, match="runs >= 1"):
        measure_latency(model, runs=0)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        measure_latency(model, threads=0)


def test_complexity_comes_from_the_model_view():
    from pyprune.evaluate import complexity

    model = load(_model())
    figures = complexity(model)
    assert figures.params == 4 * 3 * 3 * 3 + 4 * 2 == model.params()
    assert figures.nonzeros == model.nonzeros() and figures.macs == model.macs() > 0
    assert figures.file_size == model.file_size() and figures.latency is None
    timed = complexity(model, latency=True, batch_size=2, threads=1, warmup=1, runs=3)
    assert timed.latency is not None and timed.latency.batch_size == 2
