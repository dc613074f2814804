"""Patterns of real third-party exports, end to end: the fast subset of ``benchmarks/bench_corpus.py``.

Each model is written with onnx.helper the way its exporter writes it (skl2onnx's label and
probability outputs, with and without ZipMap; an opset-9 model-zoo CNN; a streaming model with a
scalar sample rate and a state without a batch axis; If and Loop control flow; symbolic image
sizes; token ids with an attention mask), pruned through the public API or the command line, and
the written model is judged independently: onnx's full check, ONNX Runtime, outputs and MACs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyprune as pp
from pyprune.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from _cli import cli  # noqa: E402

RNG = np.random.default_rng(0)


def _w(*shape: int, scale: float | None = None) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return (RNG.standard_normal(shape) * (scale or 1 / np.sqrt(fan_in))).astype(np.float32)


def _model(nodes, inputs, outputs, inits, opset=17, ml=False, ir=8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "export", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", 1)] if ml else [])
    model = helper.make_model(graph, opset_imports=imports, producer_name="test")
    model.ir_version = ir
    onnx.checker.check_model(model, full_check=True)
    return model


def _session(model: onnx.ModelProto | pp.graph.Model) -> ort.InferenceSession:
    proto = model.proto if isinstance(model, pp.graph.Model) else model
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _valid(model: pp.graph.Model, original: onnx.ModelProto, feed: dict) -> list:
    """The written model passes the full check, runs, and keeps the original's output names,
    kinds and shapes."""
    onnx.checker.check_model(model.proto, full_check=True)
    got, want = _session(model).run(None, feed), _session(original).run(None, feed)
    assert [o.name for o in model.proto.graph.output] == [o.name for o in original.graph.output]
    for a, b in zip(got, want):
        assert type(a) is type(b)
        if isinstance(a, np.ndarray):
            assert a.shape == b.shape and a.dtype == b.dtype
    return got


# -- skl2onnx classifiers ---------------------------------------------------------------------------


def sklearn_mlp(zipmap: bool, scaler: bool = False) -> onnx.ModelProto:
    """skl2onnx's MLPClassifier: the int64 label output first, then the probabilities (a ZipMap
    sequence of {class: probability} maps by default, a tensor with zipmap=False); with
    ``scaler``, a StandardScaler pipeline's Scaler op first."""
    inits = {"w1": _w(6, 16), "b1": _w(16, scale=0.1), "w2": _w(16, 4), "b2": _w(4, scale=0.1),
             "classes": np.arange(4, dtype=np.int64)}
    first = []
    if scaler:
        first = [helper.make_node("Scaler", ["X"], ["scaled"], domain="ai.onnx.ml", offset=[0.5] * 6, scale=[2.0] * 6)]
    nodes = [
        *first,
        helper.make_node("MatMul", ["scaled" if scaler else "X", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["h4"]),
        helper.make_node("Softmax", ["h4"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["index"], axis=1, keepdims=0),
        helper.make_node("Gather", ["classes", "index"], ["label"], axis=0),
    ]
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [None])]
    if zipmap:
        nodes.append(helper.make_node("ZipMap", ["probabilities"], ["output_probability"],
                                      domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2, 3]))
        maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
            TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
        outputs.append(helper.make_value_info("output_probability", maps))
    else:
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 4]))
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 6])]
    return _model(nodes, inputs, outputs, inits, opset=13, ml=True)


@pytest.mark.parametrize("zipmap, scaler", [(False, False), (True, False), (False, True)])
def test_a_classifier_is_judged_on_its_probabilities_not_its_labels(zipmap, scaler):
    proto = sklearn_mlp(zipmap, scaler)
    x = RNG.standard_normal((64, 6)).astype(np.float32)
    y = _session(proto).run(["label"], {"X": x})[0].copy()
    y[::4] = (y[::4] + 1) % 4  # a quarter of the labels disagree with the model: accuracy 0.75
    result = pp.prune(pp.load(proto), pp.Dataset({"X": x}, labels=y), strategy="oneshot",
                      target=pp.MACs(0.5), max_drop=None, measure_latency=False, quiet=True)
    report = result.report
    assert report.before.metric == pytest.approx(0.75)
    shipped = _valid(result.model, proto, {"X": x})
    # the shipped model's real accuracy, from its own probabilities
    got = shipped[1] if not zipmap else np.array([[row[k] for k in range(4)] for row in shipped[1]])
    assert report.after.metric == pytest.approx(float((got.argmax(axis=1) == y).mean()))
    judged = next(n for n in report.notes if n.startswith("metric accuracy judges"))
    assert ("'output_probability'" in judged and "'probabilities'" in judged) if zipmap else "'probabilities'" in judged
    assert "label outputs not judged: 'label' (" in judged  # the label output was seen and skipped
    assert report.after.macs / report.before.macs <= 0.5


def test_the_output_judged_can_be_named_and_a_wrong_name_is_refused():
    proto = sklearn_mlp(zipmap=False)
    x = RNG.standard_normal((16, 6)).astype(np.float32)
    data = pp.Dataset({"X": x})
    result = pp.prune(pp.load(proto), data, strategy="oneshot", target=pp.MACs(0.5), max_drop=None,
                      measure_latency=False, quiet=True, metric_output="label")
    assert any("judges output 'label': named" in n for n in result.report.notes)
    with pytest.raises(DataError, match=r"--metric-output 'scores'.*outputs are \['label', 'probabilities'\]"):
        pp.prune(pp.load(proto), data, strategy="oneshot", target=pp.MACs(0.5), quiet=True,
                 metric_output="scores")


# -- opset 9 -----------------------------------------------------------------------------------------


def opset9_cnn() -> onnx.ModelProto:
    """A model-zoo era CNN at opset 9: BatchNormalization, MaxPool, Upsample with a scales input,
    Flatten and Gemm."""
    inits = {"w1": _w(8, 3, 3, 3), "b1": _w(8, scale=0.1), "w2": _w(8, 8, 3, 3), "w3": _w(6, 8, 1, 1),
             "s": np.abs(_w(8)) + 0.5, "t": _w(8, scale=0.1), "m": _w(8, scale=0.1), "v": np.abs(_w(8)) + 0.5,
             "scales": np.array([1, 1, 2, 2], np.float32), "fc": _w(3, 6 * 8 * 8), "fcb": _w(3, scale=0.1)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "s", "t", "m", "v"], ["n2"]),
        helper.make_node("Relu", ["n2"], ["r2"]),
        helper.make_node("Upsample", ["r2", "scales"], ["u2"], mode="nearest"),
        helper.make_node("Conv", ["u2", "w3"], ["c3"]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Flatten", ["r3"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], inits, opset=9, ir=4)


def test_an_opset_9_export_is_converted_pruned_and_written_at_opset_11(tmp_path):
    proto = opset9_cnn()
    path, out = tmp_path / "zoo.onnx", tmp_path / "zoo.pruned.onnx"
    onnx.save(proto, path)
    x = RNG.standard_normal((8, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    proc = cli("prune", path, "-o", out, "--macs", "0.6", "--strategy", "oneshot",
                    "--max-drop", "none", "--data", tmp_path / "calib.npz")
    assert proc.returncode == 0, proc.stderr
    assert "converted to opset 11 with onnx.version_converter" in proc.stdout
    pruned = pp.load(out)
    assert pruned.opset == 11 and pruned.converted_from is None  # written at 11: nothing to convert
    _valid(pruned, proto, {"x": x[:1]})
    assert pruned.macs() <= 0.6 * pp.load(path).macs()
    inspect = cli("inspect", path)
    assert "opset 11 (converted from opset 9 with onnx.version_converter)" in inspect.stdout


# -- streaming audio: a scalar and a state that are not samples ---------------------------------------


def streaming_model() -> onnx.ModelProto:
    """One chunk per call ([1, 64]), a scalar int64 sample rate and a [2, 8] state with no batch
    axis in and out (as Silero VAD's export takes them)."""
    inits = {"w1": _w(8, 1, 8), "b1": _w(8, scale=0.1), "w2": _w(8, 8, 3), "b2": _w(8, scale=0.1),
             "rate": np.array(16000.0, np.float32), "one": np.array([1], np.int64), "half": np.array(0.5, np.float32),
             "head": _w(8, 1), "reduce": np.array([2], np.int64)}
    nodes = [
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["srf", "rate"], ["scale"]),
        helper.make_node("Mul", ["chunk", "scale"], ["scaled"]),
        helper.make_node("Unsqueeze", ["scaled", "one"], ["x"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[4]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("ReduceMean", ["r2", "reduce"], ["h"], keepdims=0),  # [1, 8]
        helper.make_node("Mul", ["state", "half"], ["decayed"]),
        helper.make_node("Add", ["decayed", "h"], ["state_out"]),  # [2, 8]
        helper.make_node("MatMul", ["h", "head"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["speech_prob"]),
    ]
    inputs = [helper.make_tensor_value_info("chunk", TensorProto.FLOAT, [1, 64]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, []),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 8])]
    outputs = [helper.make_tensor_value_info("speech_prob", TensorProto.FLOAT, [1, 1]),
               helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, 8])]
    return _model(nodes, inputs, outputs, inits, opset=18)


@pytest.mark.parametrize("given", [True, False])
def test_scalar_and_state_inputs_are_held_not_batched(given):
    proto = streaming_model()
    chunks = RNG.standard_normal((12, 64)).astype(np.float32)
    arrays = {"chunk": chunks}
    if given:
        arrays |= {"sr": np.array(16000, np.int64), "state": RNG.standard_normal((2, 8)).astype(np.float32)}
    data = pp.Dataset(arrays)
    bound = data.bind(pp.load(proto))
    assert len(bound) == 12 and set(bound.held) == {"sr", "state"}
    assert [h.source for h in bound.held.values()] == ["data" if given else "default"] * 2
    batches = bound.batches(pp.load(proto))
    assert len(batches) == 12 and batches[3].feed["sr"].shape == () and batches[3].feed["state"].shape == (2, 8)
    result = pp.prune(pp.load(proto), data, strategy="oneshot", target=pp.MACs(0.5), max_drop=None,
                      measure_latency=False, quiet=True)
    feed = {"chunk": chunks[:1], "sr": np.array(16000, np.int64), "state": np.zeros((2, 8), np.float32)}
    _valid(result.model, proto, feed)
    notes = " ".join(result.report.notes)
    if given:
        assert "input 'sr' [] is not split into samples" in notes and "input 'state' [2, 8]" in notes
    else:
        assert "input 'sr' [] is not in the data: held at 0" in notes
    # one probability per chunk: no class axis, so fidelity is relative MSE, not top-1 agreement
    assert result.report.metric_name == "relative_mse"
    assert "judges output 'speech_prob'" in notes


# -- control flow --------------------------------------------------------------------------------------


def control_flow_model() -> onnx.ModelProto:
    """torch.cond's export (an If whose branches read Conv weights of the main graph) followed by a
    Loop whose body holds its own weights, around prunable convolutions and Gemms."""
    inits = {"w1": _w(8, 3, 3, 3), "b1": _w(8, scale=0.1), "wa": _w(8, 8, 3, 3), "wb": _w(8, 8, 1, 1),
             "w3": _w(12, 8, 3, 3), "b3": _w(12, scale=0.1), "fc": _w(12, 16), "fcb": _w(16, scale=0.1),
             "out": _w(16, 4), "zero": np.array(0.0, np.float32), "trips": np.array(2, np.int64),
             "go": np.array(True)}
    then_g = helper.make_graph([helper.make_node("Conv", ["r1", "wa"], ["ya"], pads=[1, 1, 1, 1])], "then", [],
                               [helper.make_tensor_value_info("ya", TensorProto.FLOAT, ["N", 8, 6, 6])])
    else_g = helper.make_graph([helper.make_node("Conv", ["r1", "wb"], ["yb"])], "else", [],
                               [helper.make_tensor_value_info("yb", TensorProto.FLOAT, ["N", 8, 6, 6])])
    body = helper.make_graph(
        [helper.make_node("MatMul", ["s_in", "body_w"], ["s_mm"]), helper.make_node("Tanh", ["s_mm"], ["s_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_in", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, ["N", 16])],
        [numpy_helper.from_array(_w(16, 16), "body_w")])
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("ReduceMean", ["r1"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["y"], ["ry"]),
        helper.make_node("Conv", ["ry", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["h"]),
        helper.make_node("Relu", ["h"], ["rh"]),
        helper.make_node("Loop", ["trips", "go", "rh"], ["looped"], body=body),
        helper.make_node("MatMul", ["looped", "out"], ["logits"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits, opset=17)


def test_control_flow_bodies_prune_with_everything_outside():
    proto = control_flow_model()
    model = pp.load(proto)
    # MACs count the costlier If branch and the Loop body once per trip
    then_macs, body_macs = 36 * 8 * 8 * 9, 16 * 16
    outside = 36 * 8 * 27 + 36 * 12 * 8 * 9 + 12 * 16 + 16 * 4
    assert model.macs() == outside + then_macs + 2 * body_macs
    x = np.abs(RNG.standard_normal((8, 3, 6, 6))).astype(np.float32)
    result = pp.prune(model, pp.Dataset({"x": x}), strategy="oneshot", target=pp.MACs(0.4), max_drop=None,
                      measure_latency=False, quiet=True)
    frozen = result.report.frozen
    assert not any("body" in k or "branches" in k for k in frozen)  # both bodies are followed
    assert "ReduceMean node" in frozen["Conv_1"]  # (the condition reads every channel of the first conv)
    # the branches' convs with the conv after the If, the Gemm with the Loop's state and body
    assert set(result.report.removed) == {"Conv_2", "Conv_3", "Gemm_1"}, result.report.removed
    _valid(result.model, proto, {"x": x[:2]})
    assert result.met and result.model.macs() <= 0.4 * model.macs()


# -- declared types without shapes ------------------------------------------------------------------


def typed_constants_model() -> onnx.ModelProto:
    """paddle2onnx 2.x's squeeze-excitation bias: a Constant reshaped by a shape read through an
    Identity, and every value declared with its element type only (no shape)."""
    nodes = [
        helper.make_node("Constant", [], ["se.b"], value=numpy_helper.from_array(_w(8, scale=0.1), "se.b")),
        helper.make_node("Constant", [], ["shape.c"], value=numpy_helper.from_array(np.array([1, -1, 1, 1]), "s")),
        helper.make_node("Identity", ["shape.c"], ["shape"]),
        helper.make_node("Reshape", ["se.b", "shape"], ["bias"]),
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "bias"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])],
                   {"w1": _w(8, 3, 3, 3), "w2": _w(4, 8, 1, 1)})
    proto.graph.value_info.extend(helper.make_empty_tensor_value_info(v) for v in ("bias", "a1", "r1"))
    for v in proto.graph.value_info:
        v.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.checker.check_model(proto, full_check=True)
    return proto


def test_declared_types_without_shapes_do_not_hide_a_folded_weights_shape():
    proto = typed_constants_model()
    model = pp.load(proto)
    assert model.shape("bias") == [1, 8, 1, 1] and model.shape("a1") == ["N", 8, 6, 6]
    x = RNG.standard_normal((8, 3, 6, 6)).astype(np.float32)
    result = pp.prune(model, pp.Dataset({"x": x}), strategy="oneshot", target=pp.MACs(0.6), max_drop=None,
                      measure_latency=False, quiet=True)
    assert result.met and result.report.removed  # the Conv's channels, with the reshaped bias
    _valid(result.model, proto, {"x": x[:2]})


# -- symbolic image sizes --------------------------------------------------------------------------------


def dynamic_hw_model() -> onnx.ModelProto:
    inits = {"w1": _w(8, 3, 3, 3), "w2": _w(8, 8, 3, 3), "w3": _w(4, 8, 1, 1)}
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["out"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", None])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, None, None])], inits)


def test_symbolic_sizes_come_from_flags_or_data_and_their_absence_names_the_flags(tmp_path):
    proto = dynamic_hw_model()
    macs = 32 * 32 * (8 * 27 + 8 * 72 + 4 * 8)  # per sample at 64x64 (stride 2: 32x32 after conv 1)
    with pytest.raises(DataError, match=r"axis 2 is symbolic \(height\); give its size: --dim height=N or "
                                        r"--input-shape image:N,3,N,N"):
        pp.prune(pp.load(proto), strategy="oneshot", quiet=True)
    with pytest.raises(DataError, match=r"axis 3 is symbolic \(unnamed\); give its size: --input-shape"):
        pp.prune(pp.load(proto), strategy="oneshot", quiet=True, dims={"height": 64})
    result = pp.prune(pp.load(proto), strategy="oneshot", target=pp.MACs(0.5), quiet=True,
                      input_shapes={"image": (1, 3, 64, 64)}, measure_latency=False)
    assert result.report.before.macs == macs and result.report.after.macs <= macs / 2
    assert any("image [batch, 3, 64, 64]" in n for n in result.report.notes)
    x = RNG.standard_normal((4, 3, 40, 24)).astype(np.float32)
    result = pp.prune(pp.load(proto), pp.Dataset({"image": x}), strategy="oneshot", target=pp.MACs(0.5),
                      max_drop=None, quiet=True, measure_latency=False)
    assert result.report.before.macs == 20 * 12 * (8 * 27 + 8 * 72 + 4 * 8)  # the data's 40x24
    _valid(result.model, proto, {"image": RNG.standard_normal((1, 3, 18, 30)).astype(np.float32)})
    with pytest.raises(DataError, match=r"--input-shape image:1,3,64,64 \(input_shapes=\) disagrees with the data"):
        pp.prune(pp.load(proto), pp.Dataset({"image": x}), quiet=True, input_shapes={"image": (1, 3, 64, 64)})

    path = tmp_path / "seg.onnx"
    onnx.save(proto, path)
    plain = cli("inspect", path)
    assert "symbolic sizes counted as 1: height, unnamed (give --dim height=N" in plain.stdout
    sized = cli("inspect", path, "--input-shape", "image:1,3,64,64")
    assert "inputs:  image float32 [batch, 3, 64, 64]" in sized.stdout
    assert "(sizes from --input-shape/--dim), batch 1" in sized.stdout and "counted as 1" not in sized.stdout
    bad = cli("inspect", path, "--dim", "height=64")
    assert bad.returncode == 2 and "--input-shape image:N,3,N,N" in bad.stderr
    bad = cli("inspect", path, "--input-shape", "image:1,3,x")
    assert bad.returncode == 2 and "expected positive integer sizes after image:" in bad.stderr


# -- token ids and an attention mask ---------------------------------------------------------------------


def tokens_model() -> onnx.ModelProto:
    """Token ids into a 20-row embedding, masked by an attention mask, then an FFN."""
    inits = {"emb": _w(20, 8, scale=1.0), "w1": _w(8, 16), "w2": _w(16, 8), "two": np.array([2], np.int64),
             "neg_inf": np.array(-np.inf, np.float32)}  # a mask's fill value, not a weight
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["mb"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["mb", "two"], ["mu"]),
        helper.make_node("Where", ["mu", "e", "neg_inf"], ["masked"]),
        helper.make_node("MatMul", ["masked", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["rh"]),
        helper.make_node("MatMul", ["rh", "w2"], ["hidden"]),
    ]
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
           for n in ("input_ids", "attention_mask")]
    return _model(nodes, ids, [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "sequence", 8])],
                  inits)


def test_a_missing_attention_mask_is_held_at_ones_and_synthetic_ids_fit_the_embedding():
    proto = tokens_model()
    model = pp.load(proto)
    ids = RNG.integers(0, 20, (6, 5)).astype(np.int64)
    bound = pp.Dataset({"input_ids": ids}).bind(model)
    mask = bound.held["attention_mask"]
    assert mask.source == "default" and mask.per_sample and np.all(mask.value == 1) and mask.value.shape == (5,)
    assert bound.batches(model)[0].feed["attention_mask"].shape == (6, 5)
    synthetic = pp.Dataset.synthetic(model, n=64, dims={"sequence": 7})
    assert synthetic.arrays["input_ids"].max() < 20 and np.all(synthetic.arrays["attention_mask"] == 1)
    result = pp.prune(model, strategy="oneshot", target=pp.MACs(0.6), quiet=True, dims={"sequence": 7},
                      measure_latency=False)
    assert result.met and result.report.synthetic_data and result.report.constraint == "none"
    _valid(result.model, proto, {"input_ids": ids, "attention_mask": np.ones_like(ids)})


# -- no data: prune to the target, report fidelity on synthetic inputs -----------------------------------


def test_without_data_the_target_is_reached_in_one_cut_unless_a_constraint_is_asked_for(tmp_path):
    proto = opset9_cnn()
    path = tmp_path / "cnn.onnx"
    onnx.save(proto, path)
    proc = cli("prune", path, "-o", tmp_path / "a.onnx", "--macs", "0.5", "--strategy", "oneshot")
    assert proc.returncode == 0, proc.stderr
    assert "Target reached" in proc.stdout and "on synthetic inputs" in proc.stdout
    assert "1 evaluations" in proc.stdout and "no data was given: inputs are synthetic" in proc.stdout
    strict = cli("prune", path, "-o", tmp_path / "b.onnx", "--macs", "0.5", "--strategy", "oneshot",
                      "--max-drop", "0", "--json")
    report = __import__("json").loads(strict.stdout)
    assert "may drop at most 0 " in report["constraint"] and report["evaluations"] > 1  # held to it: backed off
