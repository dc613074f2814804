"""Weight masks: the saved masked model equals the original with the masks applied in numpy."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from pyprune.graph import (
    block_masks,
    load,
    maskable_weights,
    nm_masks,
    unstructured_masks,
)
from pyprune.surgery import apply_weight_masks


def mixed_model(c: int = 8, seed: int = 0, float_data: bool = False) -> onnx.ModelProto:
    """Conv, depthwise Conv, ConvTranspose, Gemm (both transB), MatMul with a constant on each
    side, and one weight shared by two MatMuls."""
    rng = np.random.default_rng(seed)
    inits = []

    def w(name, shape):
        arr = rng.standard_normal(shape).astype(np.float32)
        t = numpy_helper.from_array(arr, name)
        if float_data:  # some exporters write float_data instead of raw_data
            t = helper.make_tensor(name, TensorProto.FLOAT, arr.shape, arr.ravel().tolist())
        inits.append(t)
        return name

    nodes = [
        helper.make_node("Conv", ["x", w("conv_w", [c, 4, 3, 3]), w("conv_b", [c])], ["a"], pads=[1] * 4),
        helper.make_node("Conv", ["a", w("dw_w", [c, 1, 3, 3])], ["b"], pads=[1] * 4, group=c),
        helper.make_node("ConvTranspose", ["b", w("ct_w", [c, 4, 2, 2])], ["d"], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["d"], ["e"]),
        helper.make_node("Flatten", ["e"], ["f"]),
        helper.make_node("Gemm", ["f", w("gemm_w", [4, 12])], ["g"]),
        helper.make_node("Gemm", ["g", w("gemm_t", [8, 12]), w("gemm_b", [8])], ["h"], transB=1),
        helper.make_node("MatMul", ["h", w("shared", [8, 8])], ["i"]),
        helper.make_node("Relu", ["i"], ["j"]),
        helper.make_node("MatMul", ["j", "shared"], ["k"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[1, 0]),
        helper.make_node("MatMul", [w("left", [6, 8]), "kt"], ["y"]),
    ]
    for i, node in enumerate(nodes):  # exporters name their nodes; load keeps those names
        node.name = f"{node.op_type}_{i}"
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 2])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


REDUCTION = {"conv_w": 1, "dw_w": 1, "ct_w": 0, "gemm_w": 0, "gemm_t": 1, "shared": 0, "left": 1}


def run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def numpy_masked(proto: onnx.ModelProto, masks: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The reference: the original with its initializers multiplied by the masks in numpy."""
    ref = onnx.ModelProto()
    ref.CopyFrom(proto)
    for t in ref.graph.initializer:
        if t.name in masks:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * masks[t.name], t.name))
    return ref


def check_saved(tmp_path, proto, masks, x) -> onnx.ModelProto:
    src = tmp_path / "in.onnx"
    onnx.save_model(proto, str(src))
    model = load(src)
    before = model.proto.SerializeToString()
    masked = apply_weight_masks(model, masks)
    assert model.proto.SerializeToString() == before, "the input model was modified"
    out = masked.save(tmp_path / "out.onnx")
    plain = model.save(tmp_path / "plain.onnx")
    assert out.stat().st_size <= plain.stat().st_size <= src.stat().st_size
    saved = onnx.load_model(str(out))
    onnx.checker.check_model(saved, full_check=True)
    ref = numpy_masked(proto, masks)
    want = {t.name: numpy_helper.to_array(t) for t in ref.graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in saved.graph.initializer}
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_allclose(run(saved, x), run(ref, x), rtol=1e-5, atol=1e-6)
    return saved


X = np.random.default_rng(7).standard_normal((2, 4, 5, 5)).astype(np.float32)


def test_maskable_weights_and_axes():
    model = load(mixed_model())
    found = {w.name: w for w in maskable_weights(model)}
    assert found.keys() == REDUCTION.keys()  # biases are not weight operands
    for name, axis in REDUCTION.items():
        assert found[name].reduction_axis == axis, name
    assert found["shared"].nodes == ("MatMul_7", "MatMul_9")
    assert found["conv_w"].matrix == (8, 36)
    assert found["gemm_w"].matrix == (4, 12)
    assert found["dw_w"].nm_reason(4) is not None
    assert found["conv_w"].nm_reason(4) is None


@settings(max_examples=10, deadline=None)
@given(sparsity=st.floats(0.0, 0.95), scope=st.sampled_from(["global", "layer"]), seed=st.integers(0, 99))
def test_unstructured(tmp_path_factory, sparsity, scope, seed):
    proto = mixed_model(seed=seed)
    model = load(proto)
    masks = unstructured_masks(model, sparsity, scope=scope)
    weights = {w.name: model.weight(w.name) for w in maskable_weights(model)}
    assert masks.keys() == weights.keys()
    dropped = {n: int((~m).sum()) for n, m in masks.items()}
    if scope == "global":
        total = sum(w.size for w in weights.values())
        assert sum(dropped.values()) == int(np.floor(sparsity * total + 0.5))
        kept_min = min(np.abs(weights[n][m]).min() for n, m in masks.items() if m.any())
        drop_max = max((np.abs(weights[n][~m]).max() for n, m in masks.items() if (~m).any()), default=0)
        assert drop_max <= kept_min
    else:
        for n, w in weights.items():
            assert dropped[n] == int(np.floor(sparsity * w.size + 0.5))
    check_saved(tmp_path_factory.mktemp("u"), proto, masks, X)


@settings(max_examples=8, deadline=None)
@given(nm=st.sampled_from([(2, 4), (1, 4), (1, 2), (3, 4)]), seed=st.integers(0, 99))
def test_nm(tmp_path_factory, nm, seed):
    n, m = nm
    proto = mixed_model(seed=seed)
    model = load(proto)
    masks = nm_masks(model, n, m)
    eligible = {w.name for w in maskable_weights(model) if w.nm_reason(m) is None}
    assert masks.keys() == eligible and "dw_w" not in masks
    for name, mask in masks.items():
        axis = REDUCTION[name]
        w = np.abs(np.moveaxis(model.weight(name), axis, -1))
        mk = np.moveaxis(mask, axis, -1)
        groups_w = w.reshape(*w.shape[:-1], -1, m)
        groups_m = mk.reshape(*mk.shape[:-1], -1, m)
        assert (groups_m.sum(-1) == n).all(), name  # exactly n kept of every m
        kept = np.where(groups_m, groups_w, np.inf).min(-1)
        dropped = np.where(groups_m, -np.inf, groups_w).max(-1)
        assert (dropped <= kept).all(), name  # the n largest are the ones kept
    check_saved(tmp_path_factory.mktemp("nm"), proto, masks, X)


def test_nm_named_ineligible_weight():
    model = load(mixed_model())
    with pytest.raises(ValueError, match="dw_w.*size 1, not a multiple of 4"):
        nm_masks(model, 2, 4, weights=["dw_w"])


@settings(max_examples=6, deadline=None)
@given(block=st.sampled_from([(2, 2), (4, 1), (1, 4), (2, 4)]), sparsity=st.floats(0.0, 0.9))
def test_block(tmp_path_factory, block, sparsity):
    proto = mixed_model()
    model = load(proto)
    masks = block_masks(model, block, sparsity)
    r, c = block
    table = {w.name: w for w in maskable_weights(model)}
    tiled = {n for n, w in table.items() if w.matrix[0] % r == 0 and w.matrix[1] % c == 0}
    assert masks.keys() == tiled
    for name, mask in masks.items():
        rows, cols = table[name].matrix
        tiles = mask.reshape(rows // r, r, cols // c, c)
        assert (tiles.all(axis=(1, 3)) == tiles.any(axis=(1, 3))).all()  # whole tiles only
        n_tiles = rows // r * cols // c
        assert (~tiles.any(axis=(1, 3))).sum() == int(np.floor(sparsity * n_tiles + 0.5))
    check_saved(tmp_path_factory.mktemp("b"), proto, masks, X)


def test_file_not_larger_when_weights_were_float_data(tmp_path):
    proto = mixed_model(float_data=True)
    model = load(proto)
    check_saved(tmp_path, proto, nm_masks(model, 2, 4), X)


def test_external_data_round_trip(tmp_path):
    proto = mixed_model(c=64)
    src = tmp_path / "ext.onnx"
    on_disk = onnx.ModelProto()
    on_disk.CopyFrom(proto)  # saving as external data rewrites the proto it is given
    onnx.save_model(on_disk, str(src), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    model = load(src)
    masks = unstructured_masks(model, 0.5)
    out = apply_weight_masks(model, masks).save(tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx.data").exists()
    sizes = [p.stat().st_size for p in (src, tmp_path / "ext.onnx.data")]
    new_sizes = [p.stat().st_size for p in (out, tmp_path / "out.onnx.data")]
    assert sum(new_sizes) <= sum(sizes)
    saved = onnx.load_model(str(out))
    onnx.checker.check_model(str(out), full_check=True)
    ref = numpy_masked(proto, masks)
    for t in ref.graph.initializer:
        got = numpy_helper.to_array(next(s for s in saved.graph.initializer if s.name == t.name))
        np.testing.assert_array_equal(got, numpy_helper.to_array(t))


def test_bad_masks_raise_and_change_nothing():
    model = load(mixed_model())
    before = model.proto.SerializeToString()
    good = np.ones((8, 4, 3, 3), dtype=bool)
    with pytest.raises(ValueError, match="no weight named 'nope'"):
        apply_weight_masks(model, {"conv_w": good, "nope": good})
    with pytest.raises(TypeError, match="expected bool"):
        apply_weight_masks(model, {"conv_w": good.astype(np.float32)})
    with pytest.raises(ValueError, match="shape"):
        apply_weight_masks(model, {"conv_w": good[:4]})
    with pytest.raises(ValueError, match="sparsity"):
        unstructured_masks(model, 1.5)
    with pytest.raises(ValueError, match="not a weight of a Conv"):
        unstructured_masks(model, 0.5, weights=["conv_b"])
    assert model.proto.SerializeToString() == before


def test_scores_override_magnitude():
    model = load(mixed_model())
    rng = np.random.default_rng(5)
    scores = {w.name: rng.random(w.shape).astype(np.float32) for w in maskable_weights(model)}
    masks = unstructured_masks(model, 0.5, scores=scores, scope="layer")
    for name, mask in masks.items():
        s = scores[name]
        assert s[~mask].max() <= s[mask].min()  # the lowest scores went, whatever |w| says
    nm = nm_masks(model, 2, 4, scores=scores)
    for name, mask in nm.items():
        axis = REDUCTION[name]
        s = np.moveaxis(scores[name], axis, -1)
        mk = np.moveaxis(mask, axis, -1)
        s, mk = s.reshape(*s.shape[:-1], -1, 4), mk.reshape(*mk.shape[:-1], -1, 4)
        assert (np.where(mk, -np.inf, s).max(-1) <= np.where(mk, s, np.inf).min(-1)).all()
    with pytest.raises(ValueError, match="scores for 'conv_w'"):
        unstructured_masks(model, 0.5, scores={"conv_w": np.ones(3, dtype=np.float32)})


def test_float16_weights(tmp_path):
    proto = mixed_model()
    for t in proto.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    graph = proto.graph
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    model = load(proto)
    masks = nm_masks(model, 2, 4)
    masked = apply_weight_masks(model, masks)
    for name, mask in masks.items():
        w = masked.weight(name)
        assert w.dtype == np.float16
        np.testing.assert_array_equal(w, np.where(mask, model.weight(name), np.float16(0)))
    out = masked.save(tmp_path / "half.onnx")
    onnx.checker.check_model(str(out), full_check=True)
