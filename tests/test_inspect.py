"""The data behind ``pyprune inspect``: groups, layers, weights and model totals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pyprune.errors import ModelLoadError
from pyprune.graph import DependencyGraph, find_layers, format_inspect, inspect_model, load, nm_masks
from pyprune.surgery import apply_weight_masks


def small_resnet(batch="N") -> onnx.ModelProto:
    """Stem conv, one identity block, a depthwise conv, pooling and a classifier (frozen group)."""
    rng = np.random.default_rng(0)
    shapes = {
        "w1": [8, 3, 3, 3], "b1": [8], "w2": [8, 8, 3, 3], "w3": [8, 8, 3, 3],
        "dw": [8, 1, 3, 3], "wf": [10, 8], "bf": [10],
    }  # fmt: skip
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in shapes.items()]
    pads = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="stem", **pads),
        helper.make_node("Relu", ["a"], ["r"], name="stem_relu"),
        helper.make_node("Conv", ["r", "w2"], ["c"], name="block_conv1", **pads),
        helper.make_node("Relu", ["c"], ["d"], name="block_relu"),
        helper.make_node("Conv", ["d", "w3"], ["e"], name="block_conv2", **pads),
        helper.make_node("Add", ["r", "e"], ["s"], name="block_add"),
        helper.make_node("Conv", ["s", "dw"], ["t"], name="depthwise", group=8, **pads),
        helper.make_node("GlobalAveragePool", ["t"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="classifier", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        inits,
    )  # fmt: skip
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_totals_and_sections(tmp_path):
    path = tmp_path / "small.onnx"
    onnx.save_model(small_resnet(), str(path))
    model = load(path)
    info = inspect_model(model)
    json.dumps(info)  # plain data, ready for --json
    m = info["model"]
    assert m["path"] == str(path)
    assert m["opset"] == 17 and m["nodes"] == 10
    assert m["params"] == model.params() == sum(int(np.prod(s)) for s in
                                                 ([8, 3, 3, 3], [8], [8, 8, 3, 3], [8, 8, 3, 3],
                                                  [8, 1, 3, 3], [10, 8], [10]))
    assert m["nonzeros"] == m["params"]
    # MACs per sample (symbolic batch counts 1): three 8x8 convs, the depthwise and the Gemm
    assert m["macs"] == model.macs() == 64 * 8 * (27 + 72 + 72 + 9) + 80
    assert m["file_size"] == model.file_size()
    assert m["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 3, 8, 8]}]
    assert m["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["N", 10]}]

    graph = DependencyGraph(model)
    groups = {g["id"]: g for g in info["groups"]}
    assert groups.keys() == {g.id for g in graph.groups}
    for g in graph.groups:
        row = groups[g.id]
        assert row["units"] == g.size
        assert row["params"] == int(g.params_per_unit.sum())
        assert row["macs"] == int(g.macs_per_unit.sum())
        assert row["frozen"] == g.frozen
        assert set(row["weights"]) == {c.weight for c in g.couplings}
    frozen = [g for g in info["groups"] if g["frozen"]]
    assert [g["root"] for g in frozen] == ["classifier"]  # its outputs are the graph output

    layers = find_layers(model)
    assert [(r["id"], r["kind"], r["params"], r["macs"]) for r in info["layers"]] == [
        (layer.id, layer.kind, layer.params, layer.macs) for layer in layers
    ]
    assert {"residual:block_add", "path:block_conv1", "path:block_conv2", "path:depthwise"} == {
        r["id"] for r in info["layers"]
    }

    weights = {w["name"]: w for w in info["weights"]}
    assert weights.keys() == {"w1", "w2", "w3", "dw", "wf"}
    assert weights["w2"]["nm"] == "2:4" and weights["wf"]["nm"] == "2:4"
    assert "size 3" in weights["w1"]["nm"] and "size 1" in weights["dw"]["nm"]
    assert weights["wf"]["reduction_axis"] == 1 and weights["w2"]["reduction_axis"] == 1
    s = info["summary"]
    assert (s["groups"], s["prunable_groups"]) == (len(graph.groups), len(graph.prunable_groups))
    assert s["prunable_units"] == sum(g.size for g in graph.prunable_groups)
    assert (s["layers"], s["prunable_layers"], s["weights"], s["nm_weights"]) == (4, 4, 5, 3)


def test_nonzeros_follow_masks():
    model = load(small_resnet())
    masks = nm_masks(model, 2, 4)
    masked = apply_weight_masks(model, masks)
    info = inspect_model(masked)
    weights = {w["name"]: w for w in info["weights"]}
    for name in masks:
        assert weights[name]["nonzeros"] == weights[name]["params"] // 2
    assert weights["w1"]["nonzeros"] == weights["w1"]["params"]
    removed = sum(m.size - int(m.sum()) for m in masks.values())
    assert info["model"]["nonzeros"] == info["model"]["params"] - removed


def test_text_table():
    info = inspect_model(small_resnet(batch=1))  # a ModelProto is loaded on the way
    text = format_inspect(info)
    assert "<in memory>: opset 17, 10 nodes" in text
    assert "x float32 [1, 3, 8, 8]" in text
    for g in info["groups"]:
        assert g["id"] in text
    for layer in info["layers"]:
        assert layer["id"] in text
    assert "reaches the graph output 'y'" in text or any(
        g["frozen"] and g["frozen"] in text for g in info["groups"]
    )
    assert "no: reduction axis 1 has size 3, not a multiple of 4" in text
    assert "Layers: 4 of 4 removable" in text
    # every table row of a section has its columns aligned (same start of the 2nd column)
    rows = [line for line in text.splitlines() if line.startswith("  residual:") or line.startswith("  path:")]
    assert len(rows) == 4 and len({line.index(" path ") if " path " in line else line.index(" residual ")
                                   for line in rows}) == 1


def test_frozen_layer_reason_is_listed():
    proto = small_resnet(batch=1)
    # an op shape inference does not know hides the branch's shape: the residual is frozen
    for node in proto.graph.node:
        if node.name == "block_relu":
            node.op_type, node.domain = "Mystery", "custom.domain"
    proto.opset_import.append(helper.make_opsetid("custom.domain", 1))
    info = inspect_model(proto)
    frozen = {r["id"]: r["frozen"] for r in info["layers"] if r["frozen"]}
    # the classifier (8 -> 10 features) is no candidate even without shapes: its weight says so
    assert frozen.keys() == {"residual:block_add", "path:block_conv2", "path:depthwise"}
    assert all("not fully known" in reason for reason in frozen.values())
    text = format_inspect(info)
    assert all(reason in text for reason in frozen.values())
    assert info["summary"]["prunable_layers"] == 1


def test_bad_input():
    with pytest.raises(ModelLoadError):
        inspect_model(b"not a model")
