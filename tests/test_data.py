"""Dataset loading, synthetic data, validation (DataError) and batching."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from pyprune.data import DEFAULT_BATCH_SIZE, Dataset, input_specs
from pyprune.errors import DataError
from pyprune.graph import load


def _model(inputs: list[tuple[str, int, list]]) -> onnx.ModelProto:
    """Identity per input, so the model accepts exactly the declared inputs."""
    values = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    outs = [helper.make_tensor_value_info(f"{n}_out", t, s) for n, t, s in inputs]
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"], name=f"id_{n}") for n, _, _ in inputs]
    graph = helper.make_graph(nodes, "g", values, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def image_model():
    return load(_model([("x", TensorProto.FLOAT, ["N", 3, 4, 4])]))


@pytest.fixture(scope="module")
def two_input_model():
    return load(
        _model([("ids", TensorProto.INT64, ["batch", "seq"]), ("mask", TensorProto.FLOAT, ["batch", "seq"])])
    )


@pytest.fixture(scope="module")
def fixed_batch_model():
    return load(_model([("x", TensorProto.FLOAT, [2, 5])]))


def test_specs_come_from_the_model(image_model):
    (spec,) = input_specs(image_model)
    assert spec.name == "x" and spec.dtype == np.float32 and list(spec.shape) == ["N", 3, 4, 4]


def test_missing_input_is_named(two_input_model):
    data = Dataset({"ids": np.zeros((4, 7), np.int64)})
    with pytest.raises(DataError, match=r"missing input 'mask' \(expected float32 \[batch, seq\]\)"):
        data.bind(two_input_model)


def test_extra_input_is_named(image_model):
    data = Dataset({"x": np.zeros((2, 3, 4, 4), np.float32), "y": np.zeros((2, 1), np.float32)})
    with pytest.raises(DataError, match=r"\['y'\] the model does not take"):
        data.bind(image_model)


def test_wrong_dtype_is_named(image_model):
    data = Dataset({"x": np.zeros((2, 3, 4, 4), np.float64)})
    with pytest.raises(DataError, match=r"input 'x': expected dtype float32, got float64"):
        data.bind(image_model)


def test_wrong_rank_is_named(image_model):
    data = Dataset({"x": np.zeros((2, 3, 4), np.float32)})
    with pytest.raises(DataError, match=r"input 'x': expected rank 4 .* got rank 3"):
        data.bind(image_model)


def test_wrong_fixed_size_is_named(image_model):
    data = Dataset({"x": np.zeros((2, 3, 5, 4), np.float32)})
    with pytest.raises(DataError, match=r"input 'x': expected size 4 on axis 2 .* got 5"):
        data.bind(image_model)


def test_fixed_batch_must_divide_the_samples(fixed_batch_model):
    data = Dataset(np.zeros((5, 5), np.float32))
    with pytest.raises(DataError, match=r"batch dimension is fixed at 2, but 5 samples"):
        data.batches(fixed_batch_model)


def test_labels_of_the_wrong_length():
    with pytest.raises(DataError, match=r"labels: expected 4 labels .* got 3 labels"):
        Dataset(np.zeros((4, 5), np.float32), labels=np.zeros(3, np.int64))


def test_inputs_disagreeing_on_sample_count():
    # Until bound to a model the counts may still differ (one input may hold a state without a
    # batch axis); binding to a model where both are sample inputs refuses them.
    data = Dataset({"a": np.zeros((3, 2), np.float32), "b": np.zeros((4, 2), np.float32)})
    model = load(_model([("a", TensorProto.FLOAT, ["N", 2]), ("b", TensorProto.FLOAT, ["N", 2])]))
    with pytest.raises(DataError, match=r"disagree on the number of samples.*'a': 3.*'b': 4"):
        data.bind(model)
    with pytest.raises(DataError, match=r"disagree on the number of samples.*'a': 3.*'b': 4"):
        len(data)


def test_unnamed_array_needs_a_single_input_model(two_input_model):
    with pytest.raises(DataError, match=r"single-input models only"):
        Dataset(np.zeros((2, 3), np.int64)).bind(two_input_model)


def test_validation_happens_before_batching(image_model):
    # The bad array is the last input checked; nothing is split or run before the error.
    data = Dataset({"x": np.zeros((3, 3, 4, 4), np.int32)})
    with pytest.raises(DataError, match="expected dtype float32"):
        data.batches(image_model, batch_size=1)


def test_unnamed_array_binds_to_the_single_input(image_model):
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    bound = Dataset(x).bind(image_model)
    assert list(bound.arrays) == ["x"]
    np.testing.assert_array_equal(bound.arrays["x"], x)


def test_fixed_batch_is_split(fixed_batch_model):
    x = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)
    batches = Dataset(x, labels=np.arange(6)).batches(fixed_batch_model, batch_size=100)
    assert [b.feed["x"].shape[0] for b in batches] == [2, 2, 2]
    np.testing.assert_array_equal(np.concatenate([b.feed["x"] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), np.arange(6))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), batch=st.one_of(st.none(), st.integers(1, 50)))
def test_symbolic_batch_uses_the_batch_size(image_model, n, batch):
    x = np.random.default_rng(n).normal(size=(n, 3, 4, 4)).astype(np.float32)
    batches = Dataset(x).batches(image_model, batch_size=batch)
    size = DEFAULT_BATCH_SIZE if batch is None else batch
    assert [b.stop - b.start for b in batches][:-1] == [size] * (len(batches) - 1)
    assert 1 <= batches[-1].stop - batches[-1].start <= size
    np.testing.assert_array_equal(np.concatenate([b.feed["x"] for b in batches]), x)


def test_npz_with_labels(tmp_path, image_model):
    x = np.ones((3, 3, 4, 4), np.float32)
    y = np.array([0, 2, 1])
    path = tmp_path / "data.npz"
    np.savez(path, x=x, target=y)
    data = Dataset.from_npz(path, labels="target")
    np.testing.assert_array_equal(data.labels, y)
    assert list(data.bind(image_model).arrays) == ["x"] and not data.is_synthetic


def test_npz_missing_labels_key(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.ones((3, 2), np.float32))
    with pytest.raises(DataError, match=r"no labels array 'y'; it holds \['x'\]"):
        Dataset.from_npz(path, labels="y")


def test_unreadable_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="is not a readable .npz archive"):
        Dataset.from_npz(path)


def test_from_batches_joins_feed_dicts(two_input_model):
    items = [
        {"ids": np.full((2, 5), i, np.int64), "mask": np.ones((2, 5), np.float32)} for i in range(3)
    ]
    data = Dataset.from_batches(items, labels=np.arange(6))
    assert len(data) == 6
    np.testing.assert_array_equal(data.bind(two_input_model).arrays["ids"][:, 0], [0, 0, 1, 1, 2, 2])


def test_from_batches_rejects_mismatched_shapes():
    with pytest.raises(DataError, match=r"input 'x': batches differ beyond the first axis"):
        Dataset.from_batches([{"x": np.zeros((2, 5))}, {"x": np.zeros((2, 6))}])


def test_from_batches_of_bare_arrays(image_model):
    data = Dataset.from_batches(np.zeros((1, 3, 4, 4), np.float32) for _ in range(4))
    assert len(data) == 4 and list(data.bind(image_model).arrays) == ["x"]


def test_synthetic_fits_and_is_flagged(two_input_model):
    data = Dataset.synthetic(two_input_model, n=9, seed=3, low=2.0, high=3.0, int_low=5, int_high=8, dims={"seq": 4})
    assert data.is_synthetic and "synthetic" in data.source and "synthetic" in repr(data)
    arrays = data.bind(two_input_model).arrays
    assert arrays["ids"].shape == (9, 4) and arrays["ids"].dtype == np.int64
    assert arrays["ids"].min() >= 5 and arrays["ids"].max() < 8
    assert arrays["mask"].dtype == np.float32 and 2.0 <= arrays["mask"].min() and arrays["mask"].max() < 3.0
    again = Dataset.synthetic(two_input_model, n=9, seed=3, low=2.0, high=3.0, int_low=5, int_high=8, dims={"seq": 4})
    np.testing.assert_array_equal(again.arrays["mask"], arrays["mask"])


def test_synthetic_needs_sizes_for_symbolic_dims(two_input_model):
    with pytest.raises(DataError, match=r"input 'ids': axis 1 is symbolic \(seq\)"):
        Dataset.synthetic(two_input_model, n=2)


def test_synthetic_respects_a_fixed_batch(fixed_batch_model):
    data = Dataset.synthetic(fixed_batch_model, n=4)
    assert len(data.batches(fixed_batch_model)) == 2
