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


# -- inputs that are not samples ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def streaming_model():
    # one chunk per call, a scalar sample rate, a state without a batch axis
    return load(_model([("chunk", TensorProto.FLOAT, [1, 16]), ("sr", TensorProto.INT64, []),
                        ("state", TensorProto.FLOAT, [2, 4])]))


def test_roles_come_from_the_declared_shapes(streaming_model, two_input_model):
    from pyprune.data import input_roles

    assert input_roles(streaming_model) == {"chunk": "sample", "sr": "held", "state": "held"}
    assert input_roles(two_input_model) == {"ids": "sample", "mask": "sample"}
    symbolic = load(_model([("x", TensorProto.FLOAT, ["N", 3]), ("scale", TensorProto.FLOAT, [1, 3])]))
    assert input_roles(symbolic) == {"x": "sample", "scale": "held"}


def test_a_scalar_and_a_state_are_held_and_fed_whole(streaming_model):
    chunks = np.arange(5 * 16, dtype=np.float32).reshape(5, 16)
    state = np.ones((2, 4), np.float32)
    bound = Dataset({"chunk": chunks, "sr": np.array([16000]), "state": state}).bind(streaming_model)
    assert len(bound) == 5 and list(bound.arrays) == ["chunk"] and set(bound.held) == {"sr", "state"}
    batches = bound.batches(streaming_model)
    assert [b.feed["chunk"].shape for b in batches] == [(1, 16)] * 5  # the fixed batch of 1
    assert all(b.feed["sr"].shape == () and b.feed["sr"] == 16000 for b in batches)
    np.testing.assert_array_equal(batches[4].feed["state"], state)
    assert any("'state' [2, 4] is not split into samples" in n for n in bound.notes)


def test_held_inputs_the_data_lacks_take_their_documented_defaults(streaming_model, tmp_path):
    np.savez(tmp_path / "chunks.npz", chunk=np.zeros((3, 16), np.float32))
    data = Dataset.from_npz(tmp_path / "chunks.npz", inputs=["chunk", "sr", "state"], optional=True)
    bound = data.bind(streaming_model)
    assert bound.held["sr"].value == 0 and bound.held["sr"].source == "default"
    assert np.all(bound.held["state"].value == 0) and bound.held["state"].value.shape == (2, 4)
    assert any("'sr' [] is not in the data: held at 0" in n for n in bound.notes)
    with pytest.raises(DataError, match=r"missing input 'sr'"):
        Dataset.from_npz(tmp_path / "chunks.npz", inputs=["chunk", "sr", "state"])


def test_one_value_for_every_sample_is_repeated_along_the_batch(two_input_model):
    ids = np.arange(12, dtype=np.int64).reshape(4, 3)
    for mask in (np.ones(3, np.float32), np.ones((1, 3), np.float32)):
        bound = Dataset({"ids": ids, "mask": mask}).bind(two_input_model)
        assert bound.held["mask"].per_sample and len(bound) == 4
        feed = bound.batches(two_input_model, batch_size=3)[0].feed
        assert feed["mask"].shape == (3, 3) and feed["ids"].shape == (3, 3)


def test_masks_and_token_types_missing_from_the_data_are_held_at_one_and_zero():
    model = load(_model([(name, TensorProto.INT64, ["b", "s"])
                         for name in ("input_ids", "attention_mask", "token_type_ids")]))
    bound = Dataset({"input_ids": np.ones((2, 5), np.int64)}).bind(model)
    feed = bound.batches(model)[0].feed
    assert np.all(feed["attention_mask"] == 1) and np.all(feed["token_type_ids"] == 0)
    assert feed["attention_mask"].shape == feed["token_type_ids"].shape == (2, 5)


def test_sizes_given_must_fit_the_model_and_agree_with_the_data(image_model, two_input_model):
    with pytest.raises(DataError, match=r"--input-shape x:1,3,4 \(input_shapes=\) has 3 dimensions; input 'x' has 4"):
        Dataset.synthetic(image_model, n=2, input_shapes={"x": (1, 3, 4)})
    data = Dataset({"ids": np.zeros((2, 7), np.int64), "mask": np.zeros((2, 7), np.float32)})
    with pytest.raises(DataError, match=r"--dim seq=5 \(dims=\) disagrees with the data: input 'ids' has seq = 7"):
        data.bind(two_input_model, dims={"seq": 5})
    assert data.bind(two_input_model, dims={"seq": 7}).input_shapes(two_input_model) == {
        "ids": ["batch", 7], "mask": ["batch", 7]}
