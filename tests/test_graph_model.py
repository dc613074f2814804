"""The model view: loading, normalisation, index, shapes, complexity figures and atomic save."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, parser

from pyprune.errors import ModelLoadError, UnsupportedModelError
from pyprune.evaluate import model_session
from pyprune.graph import MIN_OPSET, DependencyGraph, load
from pyprune.surgery import remove_units

sys.path.insert(0, str(Path(__file__).parent))  # the generated test models live next to this
from _models import Builder, conv_stack, random_inputs  # noqa: E402


def _run(proto: onnx.ModelProto, feeds):
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


# -- loading ------------------------------------------------------------------------------------


def test_load_from_path_bytes_and_proto_give_the_same_model(tmp_path):
    proto = conv_stack(13, "N")
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    a, b, c = load(path), load(str(path)), load(proto.SerializeToString())
    d = load(proto)
    assert a.path == path and d.path is None
    assert a.weight_names == b.weight_names == c.weight_names == d.weight_names
    assert [n.name for n in a.nodes] == [n.name for n in d.nodes]


def test_load_does_not_modify_the_given_proto():
    b = Builder(13)
    x = b.input([3])
    w = b.op("Constant", [], value=numpy_helper.from_array(np.ones((3, 2), np.float32), "v"))
    proto = b.model([b.op("MatMul", [x, w])])
    before = proto.SerializeToString()
    load(proto)
    assert proto.SerializeToString() == before


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match="nope.onnx: no such file"):
        load(tmp_path / "nope.onnx")


@pytest.mark.parametrize("content", [b"not a model at all", b"\x08\x07\x12"])
def test_garbage_file_is_a_load_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        load(path)


def test_truncated_file_is_a_load_error(tmp_path):
    path = tmp_path / "cut.onnx"
    data = conv_stack(13).SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cut.onnx"):
        load(path)


def test_invalid_graph_is_a_load_error_with_the_cause():
    proto = parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x) => (float[2] y) { y = Add(x, missing) }"""
    )
    with pytest.raises(ModelLoadError, match="invalid ONNX model"):
        load(proto)


def test_old_opsets_are_converted_on_load():
    # Opset 9 forms the converter must rewrite: Upsample with a scales input (Resize since 10),
    # BatchNormalization and Dropout with their old attributes.
    proto = parser.parse_model(
        """<ir_version: 4, opset_import: ["" : 9]>
        g (float[1, 2, 3, 3] x) => (float[1, 2, 6, 6] y) {
            s = Constant<value = float[4] {1.0, 1.0, 2.0, 2.0}>()
            u = Upsample<mode = "nearest">(x, s)
            r = Relu(u)
            y = Dropout(r)
        }"""
    )
    model = load(proto)
    assert model.opset == MIN_OPSET and model.converted_from == 9
    assert "Resize" in {n.op_type for n in model.nodes} and "Upsample" not in {n.op_type for n in model.nodes}
    assert model.copy().converted_from == 9
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    want = np.maximum(x.repeat(2, axis=2).repeat(2, axis=3), 0)
    np.testing.assert_allclose(_run(model.proto, {"x": x})[0], want)


def test_an_old_opset_the_converter_cannot_bring_forward_names_the_op():
    proto = parser.parse_model(
        """<ir_version: 5, opset_import: ["" : 10]>
        g (float[2] x) => (float[2] y) { y = Relu(x) }"""
    )
    proto.graph.node[0].op_type = "Crop"  # an experimental op of old onnx, without a schema now
    with pytest.raises(UnsupportedModelError, match=r"opset 10 is older than 11.*cannot bring op Crop forward"):
        load(proto)


def test_current_opsets_are_not_converted():
    proto = parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x) => (float[2] y) { y = Relu(x) }"""
    )
    model = load(proto)
    assert model.opset == 13 and model.converted_from is None


def test_wrong_source_type_is_a_type_error():
    with pytest.raises(TypeError, match="path, bytes or onnx.ModelProto"):
        load(123)  # type: ignore[arg-type]


# -- normalisation ------------------------------------------------------------------------------


def test_constants_and_constant_chains_fold_into_initializers():
    b = Builder(13)
    x = b.input([4, 3, 3])
    c = b.op("Constant", [], value=numpy_helper.from_array(
        np.arange(24, dtype=np.float64).reshape(3, 4, 2) / 24, "v"))
    w = b.op("Cast", [b.op("Transpose", [c], perm=[1, 0, 2])], to=TensorProto.FLOAT)  # [4,3,2]
    w = b.op("Reshape", [w, b.const(np.array([4, 6, 1, 1], np.int64))])  # [4, 6, 1, 1]
    w = b.op("Slice", [w, b.const(np.array([0], np.int64)), b.const(np.array([4], np.int64)),
                       b.const(np.array([1], np.int64))])  # [4, 4, 1, 1]
    w = b.op("Identity", [w])
    bias = b.op("Constant", [], value_floats=[0.1, 0.2, 0.3, 0.4])
    proto = b.model([b.op("Conv", [x, w, bias])])
    model = load(proto)
    assert [n.op_type for n in model.nodes] == ["Conv"]
    conv = model.nodes[0]
    assert model.is_weight(conv.input[1]) and model.is_weight(conv.input[2])
    assert model.weight(conv.input[1]).shape == (4, 4, 1, 1)
    assert model.weight(conv.input[1]).dtype == np.float32
    np.testing.assert_allclose(model.weight(conv.input[2]), [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    feeds = random_inputs(proto)
    np.testing.assert_allclose(_run(model.proto, feeds)[0], _run(proto, feeds)[0], rtol=1e-6)
    # folded values are weights the groups can cut
    assert DependencyGraph(model).groups[0].couplings[0].weight == conv.input[1]


def test_nodes_get_unique_names():
    proto = parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x) => (float[2] y) { a = Relu(x) b = Relu(a) c = Neg(b) y = Abs(c) }"""
    )
    proto.graph.node[1].name = "same"
    proto.graph.node[2].name = "same"
    names = [n.name for n in load(proto).nodes]
    assert len(set(names)) == 4 and all(names)
    assert "same" in names


def test_initializers_listed_as_inputs_become_constants():
    b = Builder(13)
    x = b.input([3])
    proto = b.model([b.gemm(x, 3, 2)])
    w = proto.graph.initializer[0]
    proto.graph.input.append(helper.make_tensor_value_info(w.name, w.data_type, list(w.dims)))
    model = load(proto)
    assert model.input_names == ["x"]
    assert [s.name for s in model.input_specs()] == ["x"]


# -- the index ----------------------------------------------------------------------------------


def test_producers_consumers_shapes_and_specs():
    model = load(conv_stack(13, "N"))
    conv = model.nodes[0]
    assert model.producer(conv.output[0]) is conv
    assert model.producer("x") is None
    (reader, index), = model.consumers(conv.output[0])
    assert reader.op_type == "BatchNormalization" and index == 0
    assert model.shape(conv.output[0]) == ["N", 6, 8, 8]
    assert model.shape(conv.input[1]) == [6, 3, 3, 3]
    assert model.node(conv.name) is conv
    with pytest.raises(KeyError):
        model.node("nothing")
    (spec,) = model.input_specs()
    assert spec.name == "x" and spec.dtype == np.float32 and spec.shape == ["N", 3, 8, 8]
    (out,) = model.output_specs()
    assert out.dtype == np.float32 and out.shape == ["N", 4, 4, 4]


def test_weights_are_read_only_and_set_weight_keeps_the_dtype():
    model = load(conv_stack(13))
    name = model.nodes[0].input[1]
    w = model.weight(name)
    with pytest.raises(ValueError):
        w[0, 0, 0, 0] = 1.0
    model.set_weight(name, np.zeros((2, 3, 3, 3), np.float64))
    assert model.weight(name).dtype == np.float32 and model.weight(name).shape == (2, 3, 3, 3)
    with pytest.raises(KeyError):
        model.weight("nothing")


def _if_model(opset=13):
    b = Builder(opset)
    x = b.input([3])
    h = b.gemm(x, 3, 4)
    inner_w = numpy_helper.from_array(np.full((4,), 2.0, np.float32), "inner_w")
    then_g = helper.make_graph(
        [helper.make_node("Mul", [h, "inner_w"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)], [inner_w])
    else_g = helper.make_graph(
        [helper.make_node("Neg", [h], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    cond = b.const(np.array(True))
    y = "y_if"
    b.nodes.append(helper.make_node("If", [cond], [y], name="the_if", then_branch=then_g,
                                    else_branch=else_g))
    return b.model([y], shapes={y: [b.batch, 4]})


def test_nested_subgraphs_round_trip_and_their_reads_are_consumers(tmp_path):
    proto = _if_model()
    model = load(proto)
    h = model.nodes[0].output[0]
    assert ("the_if", -1) in [(n.name, i) for n, i in model.consumers(h)]
    out = tmp_path / "if.onnx"
    model.save(out)
    again = onnx.load(out)
    original_if = [n for n in proto.graph.node if n.op_type == "If"][0]
    saved_if = [n for n in again.graph.node if n.op_type == "If"][0]
    for a, b in zip(saved_if.attribute, original_if.attribute):
        assert [(n.op_type, n.input, n.output) for n in a.g.node] == [(n.op_type, n.input, n.output) for n in b.g.node]
        assert a.g.output == b.g.output  # (the nodes named, the weights moved to the main graph)
    feeds = random_inputs(proto)
    np.testing.assert_allclose(_run(again, feeds)[0], _run(proto, feeds)[0])
    assert "inner_w" in model.weight_names  # a branch's weight, read from the main graph after loading
    assert model.params() == 3 * 4 + 4 + 4
    group = DependencyGraph(model).groups[0]
    assert "reaches the graph output 'y_if'" in group.frozen  # through the branches


def test_non_tensor_and_integer_outputs_survive_removal():
    b = Builder(13)
    x = b.input([3, 4, 4])
    h = b.relu(b.conv(x, 3, 5))
    y = b.conv(h, 5, 2)
    arg = b.op("ArgMax", [y], axis=1)
    seq = b.op("SequenceConstruct", [y, y])
    proto = b.model([arg, seq])
    model = load(proto)
    graph = DependencyGraph(model)
    pruned = remove_units(model, {graph.prunable_groups[0].id: [0, 3]}, graph)
    onnx.checker.check_model(pruned.proto, full_check=True)
    assert [o.name for o in pruned.proto.graph.output] == [arg, seq]
    assert pruned.proto.graph.output[1].type.WhichOneof("value") == "sequence_type"
    specs = pruned.output_specs()
    assert specs[0].dtype == np.int64 and specs[1].dtype is None
    feeds = random_inputs(proto)
    got = _run(pruned.proto, feeds)
    assert got[0].dtype == np.int64 and len(got[1]) == 2


# -- complexity ---------------------------------------------------------------------------------


def test_macs_and_params_match_hand_computed_values():
    b = Builder(13, batch="N")
    x = b.input([3, 8, 8])
    c = b.conv(x, 3, 4)  # 4*8*8 outputs x 3*3*3 = 6912
    d = b.conv(c, 4, 4, group=4)  # depthwise: 4*8*8 x 1*3*3 = 2304
    t = b.op("ConvTranspose", [d, b.weight([4, 2, 2, 2])], strides=[2, 2])  # 4*8*8 x 2*2*2 = 2048
    f = b.op("Flatten", [b.op("GlobalAveragePool", [t])])
    g = b.gemm(f, 2, 5, trans_b=1)  # 2*5 = 10
    s = b.input([6, 7], "s")
    m = b.matmul(s, 7, 3)  # 6*7*3 = 126 (symbolic batch counts 1)
    model = load(b.model([g, m]))
    per_node = {n.op_type + str(i): model.node_macs(n) for i, n in enumerate(model.nodes)}
    assert sorted(v for v in per_node.values() if v) == [10, 126, 2048, 2304, 6912]
    assert model.macs() == 6912 + 2304 + 2048 + 10 + 126
    assert model.node_params(model.nodes[0]) == 4 * 27 + 4
    params = (4 * 27 + 4) + (4 * 9 + 4) + 4 * 8 + (5 * 2 + 5) + 7 * 3
    assert model.params() == params
    assert model.nonzeros() == params  # random normals are never exactly zero
    model.set_weight(model.nodes[0].input[1], np.zeros((4, 3, 3, 3), np.float32))
    assert model.nonzeros() == params - 108
    assert model.file_size() == len(model.proto.SerializeToString())


def test_fixed_batch_counts_every_sample():
    b = Builder(13, batch=3)
    x = b.input([5])
    model = load(b.model([b.gemm(x, 5, 2)]))
    assert model.macs() == 3 * 5 * 2


# -- saving -------------------------------------------------------------------------------------


def test_save_refuses_the_input_file_and_leaves_it_untouched(tmp_path):
    path = tmp_path / "in.onnx"
    onnx.save(conv_stack(13), path)
    before = path.read_bytes()
    model = load(path)
    with pytest.raises(ValueError, match="refusing to overwrite the input model"):
        model.save(path)
    with pytest.raises(ValueError, match="refusing to overwrite"):
        model.copy().save(str(path))
    assert path.read_bytes() == before
    model.save(path, overwrite_input=True)
    assert load(path).weight_names == model.weight_names


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model = load(conv_stack(13))

    def broken(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "out.onnx")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="does not exist"):
        model.save(tmp_path / "missing" / "out.onnx")


def test_external_data_round_trip(tmp_path):
    b = Builder(13)
    x = b.input([64])
    proto = b.model([b.gemm(b.relu(b.gemm(x, 64, 32)), 32, 4)])
    first = numpy_helper.to_array(proto.graph.initializer[0])
    src = tmp_path / "src"
    src.mkdir()
    onnx.save_model(onnx.ModelProto.FromString(proto.SerializeToString()), src / "m.onnx",
                    save_as_external_data=True, location="weights.bin",
                    size_threshold=1024)
    assert (src / "weights.bin").exists()
    model = load(src / "m.onnx")
    assert model.external_data
    w = model.nodes[0].input[1]
    np.testing.assert_array_equal(model.weight(w), first)
    graph = DependencyGraph(model)
    pruned = remove_units(model, {graph.prunable_groups[0].id: list(range(16))}, graph)
    out = tmp_path / "out"
    out.mkdir()
    pruned.save(out / "p.onnx")
    assert sorted(os.listdir(out)) == ["p.onnx", "p.onnx.data"]  # the usual name when it is free
    again = load(out / "p.onnx")
    assert again.external_data
    assert again.weight(w).shape == (64, 16)
    feeds = random_inputs(proto)
    on_disk = ort.InferenceSession(str(out / "p.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(on_disk.run(None, feeds)[0], model_session(pruned).run(None, feeds)[0])
    # and back into one file when asked
    pruned.save(out / "single.onnx", external_data=False)
    assert not (out / "single.onnx.data").exists()
    assert not load(out / "single.onnx").external_data


def test_external_data_that_is_missing_is_a_load_error(tmp_path):
    b = Builder(13)
    x = b.input([64])
    onnx.save_model(b.model([b.gemm(x, 64, 32)]), tmp_path / "m.onnx",
                    save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(ModelLoadError, match="external data"):
        load(tmp_path / "m.onnx")


def test_deduplicated_bias_vectors_are_unshared_but_shared_filters_stay():
    b = Builder(13)
    x = b.input([3, 4, 4])
    bias = b.const(np.zeros(4, np.float32))  # exporters merge equal constants like this
    w = b.weight([4, 3, 1, 1])
    c1 = b.op("Conv", [x, b.weight([4, 3, 1, 1]), bias])
    c2 = b.op("Conv", [x, w, bias])
    c3 = b.op("Conv", [b.op("Neg", [x]), w])
    model = load(b.model([b.conv(c1, 4, 2), b.conv(c2, 4, 2), b.conv(c3, 4, 2)]))
    convs = [n for n in model.nodes if n.op_type == "Conv"][:3]
    assert convs[0].input[2] != convs[1].input[2]
    np.testing.assert_array_equal(model.weight(convs[1].input[2]), np.zeros(4))
    assert convs[1].input[1] == convs[2].input[1]
    groups = DependencyGraph(model).prunable_groups
    assert len(groups) == 2  # c1 alone; c2 and c3 through their shared filter


# -- input sizes ------------------------------------------------------------------------------------


def test_a_view_at_given_input_sizes_counts_their_macs_and_leaves_the_graph_alone(tmp_path):
    b = Builder(13, "N")
    b.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"]))
    y = b.conv(b.relu(b.conv("x", 3, 4, stride=2)), 4, 2)
    model = load(b.model([y], shapes={y: ["N", 2, None, None]}))
    assert model.macs() == 4 * 27 + 2 * 36  # symbolic sizes count as 1
    view = model.with_input_shapes({"x": ["N", 3, 16, 12]})
    assert view.proto is model.proto and view.assumed_shapes == {"x": ["N", 3, 16, 12]}
    assert view.macs() == 8 * 6 * 4 * 27 + 8 * 6 * 2 * 36
    assert view.input_specs()[0].shape == ["N", 3, 16, 12] and model.input_specs()[0].shape == ["N", 3, "H", "W"]
    assert view.with_input_shapes({"x": ["N", 3, 16, 12]}) is view
    pruned = remove_units(view, {DependencyGraph(view).prunable_groups[0].id: [0, 1]})
    assert pruned.assumed_shapes == view.assumed_shapes and pruned.macs() == 8 * 6 * 2 * 27 + 8 * 6 * 2 * 18
    path = pruned.save(tmp_path / "small.onnx")
    assert [d.dim_param or d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim] == \
        ["N", 3, "H", "W"]  # the written model keeps its symbolic sizes


def test_dims_annotated_as_products_of_symbols_are_multiplied_out():
    # torch annotates flattened tokens as 'sequence*batch'; per sample, batch counts 1
    b = Builder(13, "batch")
    b.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4]))
    t = b.op("Reshape", ["x", b.const(np.array([-1, 4], np.int64))])
    y = b.gemm(t, 4, 3)
    proto = b.model([y], shapes={y: ["sequence*batch", 3]})
    proto.graph.value_info.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, ["sequence*batch", 4]))
    view = load(proto).with_input_shapes({"x": ["batch", 7, 4]})
    # the exporter's annotation, or the same product worked out from the Reshape
    assert view.shape(t) in (["sequence*batch", 4], ["batch*7", 4]) and view.macs() == 7 * 4 * 3
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    del bare.graph.value_info[:]
    assert load(bare).with_input_shapes({"x": ["batch", 7, 4]}).macs() == 7 * 4 * 3


def test_shapes_computed_at_run_time_are_worked_out_for_the_macs():
    # TorchScript's ShuffleNet: channels per group = C // 2 read at run time, the channel split
    # (x.chunk(2, dim=1)) a Slice whose bounds are computed the same way, one block after another
    b = Builder(13, "N")
    h = b.conv(b.input([3, 4, 4]), 3, 8)
    for _ in range(3):
        size = b.op("Gather", [b.op("Shape", [h]), b.const(np.array(1, np.int64))], axis=0)
        half = b.op("Div", [size, b.const(np.array(2, np.int64))])
        end = b.unsqueeze(b.op("Mul", [half, b.const(np.array(2, np.int64))]), [0])
        start = b.unsqueeze(half, [0])
        kept = b.op("Slice", [h, start, end, b.const(np.array([1], np.int64))])
        hw = [b.unsqueeze(b.op("Gather", [b.op("Shape", [h]), b.const(np.array(i, np.int64))], axis=0), [0])
              for i in (0, 2, 3)]
        target = b.op("Concat", [hw[0], b.const(np.array([2], np.int64)), b.unsqueeze(half, [0]), hw[1], hw[2]], axis=0)
        mixed = b.op("Reshape", [b.op("Concat", [b.conv(kept, 4, 4), kept], axis=1), target])
        back = b.op("Concat", [hw[0], b.const(np.array([-1], np.int64)), hw[1], hw[2]], axis=0)
        h = b.op("Reshape", [b.op("Transpose", [mixed], perm=[0, 2, 1, 3, 4]), back])
    model = load(b.model([h], shapes={h: ["N", 8, 4, 4]}))
    assert model.uncounted_macs() == []
    assert model.macs() == 16 * 8 * 27 + 3 * 16 * 4 * 36


def test_a_matmul_by_a_weight_counts_its_reduced_size_from_the_weight():
    # attention contexts reshaped at run time can leave A's last size unknown; B's rows give it
    b = Builder(13, "N")
    b.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, None]))
    y = b.matmul("x", 6, 5)
    model = load(b.model([y], shapes={y: ["N", 4, 5]}))
    assert model.shape("x")[-1] is None and model.macs() == 4 * 5 * 6


# -- shapes of transformer exports ---------------------------------------------------------------


def test_expand_targets_written_with_where_equal_minus_one_are_evaluated():
    # transformers exports expand masks to Where(Equal(v, -1), 1, v) with v = [batch, -1, seq, seq]
    b = Builder(17, batch="N")
    x = b.input([4, 6])
    mask = b.input([1, 1, 4], "mask")
    shape = b.op("Shape", [x])
    batch = b.unsqueeze(b.op("Gather", [shape, b.const(np.array(0, np.int64))], axis=0), [0])
    seq = b.unsqueeze(b.op("Gather", [shape, b.const(np.array(1, np.int64))], axis=0), [0])
    v = b.op("Concat", [batch, b.const(np.array([-1], np.int64)), seq, seq], axis=0)
    ones = b.op("ConstantOfShape", [b.op("Shape", [v])], value=helper.make_tensor("one", TensorProto.INT64, [1], [1]))
    minus = b.op("Mul", [ones, b.const(np.array(-1, np.int64))])
    target = b.op("Where", [b.op("Equal", [v, minus]), ones, v])
    expanded = b.op("Expand", [mask, target])
    model = load(b.model([b.op("Add", [expanded, b.const(np.zeros([1, 1, 1, 1], np.float32))])]))
    assert [e.value for e in model.shape_vector(target)] == ["N", 1, 4, 4]
    assert model.shape(expanded) == ["N", 1, 4, 4]


def test_the_reduced_dimension_of_a_constant_matmul_is_inferred_backwards():
    b = Builder(17, batch="N")
    x = b.input([3, 4, 2])
    shape = b.op("Shape", [x])
    lead = b.op("Slice", [shape, b.const(np.array([0], np.int64)), b.const(np.array([2], np.int64))])
    merged = b.op("Reshape", [x, b.op("Concat", [lead, b.const(np.array([-1], np.int64))], axis=0)])
    model = load(b.model([b.matmul(merged, 8, 5)]))
    assert model.shape(merged)[-1] == 8


def test_a_reshape_target_shared_by_two_layers_is_built_once_per_reader():
    b = Builder(17, batch="N")
    x = b.input([3, 4])
    shape = b.op("Shape", [x])
    lead = b.op("Slice", [shape, b.const(np.array([0], np.int64)), b.const(np.array([2], np.int64))])
    target = b.op("Concat", [lead, b.const(np.array([2, 3], np.int64))], axis=0)
    one = b.op("Reshape", [b.matmul(x, 4, 6), target])
    two = b.op("Reshape", [b.matmul(x, 4, 6), target])
    back = b.const(np.array([0, 0, 6], np.int64))
    out = b.op("Add", [b.matmul(b.op("Reshape", [one, back]), 6, 2), b.matmul(b.op("Reshape", [two, back]), 6, 2)])
    model = load(b.model([out]))
    reshapes = [n for n in model.nodes if n.op_type == "Reshape"]
    assert len({n.input[1] for n in reshapes if not model.is_weight(n.input[1])}) == 2
    feeds = random_inputs(model.proto)
    np.testing.assert_allclose(_run(model.proto, feeds)[0], _run(b.model([out]), feeds)[0], rtol=1e-6)
    # each layer's head count follows its own units
    graph = DependencyGraph(model)
    first, second = graph.prunable_groups
    assert first.size == second.size == 2
    pruned = remove_units(model, {first.id: [0]}, graph)
    targets = sorted(pruned.weight(n.input[1]).tolist() for n in pruned.nodes if n.op_type == "Concat"
                     and pruned.is_weight(n.input[1]))
    assert targets == [[1, 3], [2, 3]]
