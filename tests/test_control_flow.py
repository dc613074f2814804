"""Channels through control flow: If branches and Loop bodies are pruned like the main graph.

The models are written with onnx.helper the way exporters write them: torch.cond's If whose
branches read Conv weights of the main graph (or hold their own), an MLP whose hidden state a Loop
refines with weights of its own body. The oracle is the one of all channel surgery: the physically
smaller model equals the original with the same units masked (by the surgery's masks and by the
search session's fed masks, inside the bodies), passes onnx's full check and runs in ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import pyprune as pp
from pyprune.evaluate import MaskedSession
from pyprune.graph import DependencyGraph, Model, load, maskable_weights
from pyprune.surgery import insert_masks, remove_units

OPSET = 17


def _weights(rng: np.random.Generator, **shapes: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {name: (rng.standard_normal(shape) / np.sqrt(max(int(np.prod(shape[1:])), 1))).astype(np.float32)
            for name, shape in shapes.items()}


def _inits(values: dict[str, np.ndarray]) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(v, k) for k, v in values.items()]


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "control_flow", inputs, outputs, _inits(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="test")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _value(name: str, shape: list, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def cond_cnn(stem: int = 6, inner: int = 5, out: int = 4, tail: int = 3, local: bool = False,
             then_ops: tuple[str, ...] = (), else_identity: bool = False, seed: int = 0) -> onnx.ModelProto:
    """torch.cond's export: a stem Conv, an If whose heavy branch runs Conv-Relu-Conv and whose
    light branch a 1x1 Conv (both reading the stem's channels from the main graph), then a Relu,
    a Conv, pooling and a Gemm. Branch weights are main-graph initializers (as the dynamo exporter
    writes them) or, with ``local``, initializers of the branches. ``then_ops``: ops put on the
    stem's channels at the start of the heavy branch; ``else_identity``: the light branch hands
    back a graph input instead of computing its output."""
    rng = np.random.default_rng(seed)
    outer = _weights(rng, w1=(stem, 3, 3, 3), b1=(stem,), w3=(tail, out, 3, 3), b3=(tail,), fc=(tail, 2))
    heavy = _weights(rng, wa=(inner, stem, 3, 3), ba=(inner,), wb=(out, inner, 3, 3), bb=(out,))
    light = _weights(rng, wl=(out, stem, 1, 1), bl=(out,))
    first, nodes = "r1", []
    for k, op in enumerate(then_ops):
        nodes.append(helper.make_node(op, [first], [f"pre{k}"], **({"size": 3} if op == "LRN" else {})))
        first = f"pre{k}"
    then_g = helper.make_graph(
        [*nodes, helper.make_node("Conv", [first, "wa", "ba"], ["ya"], pads=[1, 1, 1, 1], name="heavy_a"),
         helper.make_node("Relu", ["ya"], ["ra"]),
         helper.make_node("Conv", ["ra", "wb", "bb"], ["y"], pads=[1, 1, 1, 1], name="heavy_b")],
        "then", [], [_value("y", ["N", out, 6, 6])], _inits(heavy) if local else [])
    else_nodes = [helper.make_node("Identity", ["skip"], ["y"])] if else_identity else \
        [helper.make_node("Conv", ["r1", "wl", "bl"], ["y"], name="light")]
    else_g = helper.make_graph(else_nodes, "else", [], [_value("y", ["N", out, 6, 6])],
                               _inits(light) if local else [])
    main = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("If", ["cond"], ["chosen"], then_branch=then_g, else_branch=else_g, name="gate"),
        helper.make_node("Relu", ["chosen"], ["rc"]),
        helper.make_node("Conv", ["rc", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], name="tail"),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], name="head"),
    ]
    inputs = [_value("x", ["N", 3, 6, 6]), _value("cond", [], TensorProto.BOOL)]
    if else_identity:
        inputs.append(_value("skip", ["N", out, 6, 6]))
    inits = {**outer, **({} if local else {**heavy, **light})}
    return _model(main, inputs, [_value("logits", ["N", 2])], inits)


def loop_mlp(hidden: int = 6, trips: int = 3, scan: bool = False, state_input: bool = False,
             seed: int = 0) -> onnx.ModelProto:
    """An MLP whose hidden state a Loop refines ``trips`` times, ``h = h + Relu(Gemm(h))`` with the
    body's own weights; with ``scan``, the body also hands out ``Relu(h)`` at every iteration (a
    scan output, averaged over the iterations and added to the final state); with ``state_input``
    the state starts from a graph input instead of the first Gemm (whose output is then unused),
    and the body replaces it, ``h = Relu(Gemm(h))``."""
    rng = np.random.default_rng(seed)
    weights = _weights(rng, fc1=(5, hidden), fb1=(hidden,), fc2=(hidden, 4), fb2=(4,), out=(4, 3))
    body_nodes = [helper.make_node("Gemm", ["h_in", "bw", "bb"], ["pre"], name="refine"),
                  helper.make_node("Relu", ["pre"], ["act"]),
                  helper.make_node("Identity" if state_input else "Add", ["act"] if state_input else ["h_in", "act"],
                                   ["h_out"]),
                  helper.make_node("Identity", ["c_in"], ["c_out"])]
    outputs = [_value("c_out", [], TensorProto.BOOL), _value("h_out", ["N", hidden])]
    if scan:
        body_nodes.append(helper.make_node("Relu", ["h_out"], ["seen"]))
        outputs.append(_value("seen", ["N", hidden]))
    body = helper.make_graph(
        body_nodes, "body",
        [_value("i", [], TensorProto.INT64), _value("c_in", [], TensorProto.BOOL), _value("h_in", ["N", hidden])],
        outputs, _inits(_weights(rng, bw=(hidden, hidden), bb=(hidden,))))
    start = "h0" if state_input else "r0"
    nodes = [helper.make_node("Gemm", ["x", "fc1", "fb1"], ["g0"], name="fc1"),
             helper.make_node("Relu", ["g0"], ["r0"]),
             helper.make_node("Loop", ["trips", "go", start], ["h", *(["stack"] if scan else [])], body=body,
                              name="refine_loop")]
    last = "h"
    if scan:
        nodes += [helper.make_node("ReduceMean", ["stack"], ["mean"], axes=[0], keepdims=0),
                  helper.make_node("Add", ["h", "mean"], ["both"])]
        last = "both"
    nodes += [helper.make_node("Gemm", [last, "fc2", "fb2"], ["g2"], name="fc2"),
              helper.make_node("Relu", ["g2"], ["r2"]),
              helper.make_node("Gemm", ["r2", "out"], ["y"], name="head")]
    inits = {**weights, "trips": np.array(trips, np.int64), "go": np.array(True)}
    inputs = [_value("x", ["N", 5])] + ([_value("h0", ["N", hidden])] if state_input else [])
    return _model(nodes, inputs, [_value("y", ["N", 3])], inits)


def _feeds(proto: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in proto.graph.input:
        if v.type.tensor_type.elem_type == TensorProto.BOOL:
            feeds[v.name] = np.array(True)
            continue
        dims = [batch if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
        feeds[v.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def _run(model: Model | onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    proto = model.proto if isinstance(model, Model) else model
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in wanted})


def _removal_equals_masking(model: Model, graph: DependencyGraph, removals: dict[str, list[int]],
                            feed_sets: list[dict[str, np.ndarray]]) -> Model:
    """Remove ``removals``; the smaller model passes the full check and, on every feed set (e.g.
    either If branch), equals the original masked by the surgery and by the search session."""
    removed = remove_units(model, removals, graph)
    onnx.checker.check_model(removed.proto, full_check=True)
    keep = {gid: ~np.isin(np.arange(graph.group(gid).size), idx) for gid, idx in removals.items()}
    masked = insert_masks(model, keep, graph)
    groups = [graph.group(gid) for gid in removals]
    for feeds in feed_sets:
        got, want, original = _run(removed, feeds), _run(masked, feeds), _run(model, feeds)
        for g, w, o in zip(got, want, original):
            assert g.shape == w.shape == o.shape
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        data = pp.Dataset({k: v for k, v in feeds.items()})
        session = MaskedSession(model, data, groups=groups)
        np.testing.assert_allclose(session.run(group_masks=keep)[0], want[0], rtol=1e-4, atol=1e-5)
    return removed


def _draw_removals(data, groups) -> dict[str, list[int]]:
    chosen = data.draw(st.lists(st.sampled_from(groups), min_size=1, unique_by=lambda g: g.id))
    return {g.id: data.draw(st.lists(st.integers(0, g.size - 1), min_size=1, max_size=g.size - 1, unique=True))
            for g in chosen}


# -- If ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("local", [False, True], ids=["outer-weights", "branch-weights"])
def test_if_branches_prune_with_the_graph_around_them(local):
    model = load(cond_cnn(local=local))
    graph = DependencyGraph(model)
    prunable = {g.id: g for g in graph.prunable_groups}
    # the stem (read by both branches), the group wholly inside the heavy branch, the If's output
    # (both branches' last convs with the tail's input columns) and the tail
    assert set(prunable) == {"stem", "heavy_a", "light", "tail"}, [(g.id, g.frozen) for g in graph.groups]
    out = prunable["light"]
    assert {c.weight for c in out.couplings} == {"wb", "bb", "wl", "bl", "w3"}
    assert {mp.node for mp in prunable["stem"].mask_points} == {"heavy_a", "light"}  # inside the branches
    assert {c.weight for c in prunable["heavy_a"].couplings} == {"wa", "ba", "wb"}
    assert "wa" in model.weight_names  # branch initializers are read from the main graph after loading
    assert graph.control_flow == {}
    feeds = _feeds(model.proto)
    removals = {"stem": [0, 3], "heavy_a": [1], "light": [0, 2], "tail": [2]}
    removed = _removal_equals_masking(model, graph, removals, [feeds, {**feeds, "cond": np.array(False)}])
    # the MACs of the pruned model are those of its smaller branches (the costlier one counted)
    macs = 36 * (4 * 27 + 4 * 4 * 9 + 2 * 4 * 9 + 2 * 2 * 9) + 2 * 2
    assert removed.macs() == macs
    for branch in ("then_branch", "else_branch"):
        body = next(a.g for a in removed.node("gate").attribute if a.name == branch)
        assert [d.dim_value for d in body.output[0].type.tensor_type.shape.dim][1:] == [2, 6, 6]


@settings(max_examples=12, deadline=None, database=None)
@given(st.data(), st.integers(2, 6), st.integers(2, 5), st.integers(2, 5), st.booleans(), st.integers(1, 3))
def test_if_removal_equals_masking_for_any_sizes(data, stem, inner, out, local, batch):
    model = load(cond_cnn(stem, inner, out, local=local, seed=stem * inner))
    graph = DependencyGraph(model)
    assert len(graph.prunable_groups) == 4
    feeds = _feeds(model.proto, batch)
    _removal_equals_masking(model, graph, _draw_removals(data, graph.prunable_groups),
                            [feeds, {**feeds, "cond": np.array(False)}])


def test_channels_an_if_cannot_follow_stay_whole_with_a_reason():
    # LRN on the stem's channels inside the heavy branch: the stem freezes, the rest prunes
    graph = DependencyGraph(load(cond_cnn(then_ops=("LRN",))))
    assert "LRN node" in graph.group("stem").frozen and "mixes neighbouring channels" in graph.group("stem").frozen
    assert {g.id for g in graph.prunable_groups} == {"heavy_a", "light", "tail"}
    # an op without a rule in a branch names the op
    graph = DependencyGraph(load(cond_cnn(then_ops=("LpNormalization",))))
    assert "LpNormalization node" in graph.group("stem").frozen and "not understood" in graph.group("stem").frozen
    # a branch handing back a graph input: the other branch's channels have to stay as they are
    model = load(cond_cnn(else_identity=True))
    graph = DependencyGraph(model)
    assert "If node 'gate' gets output 0 from branches that give it different channels" in graph.group("heavy_b").frozen
    assert "light" not in model.nodes and "else_identity" not in graph.group("heavy_b").frozen
    assert {g.id for g in graph.prunable_groups} == {"stem", "heavy_a", "tail"}
    feeds = {**_feeds(model.proto), "skip": np.ones((2, 4, 6, 6), np.float32)}
    _removal_equals_masking(model, graph, {"stem": [1], "heavy_a": [0, 4], "tail": [1]},
                            [feeds, {**feeds, "cond": np.array(False)}])


def scan_rows(axis: int = 0, seed: int = 0) -> onnx.ModelProto:
    """A Scan over the rows of a Gemm's output (``axis``: the scanned axis) whose body scales each
    row by a weight of its own and adds it to a running sum that starts at the rows' sum; the final
    sum and the stacked scaled rows are added and read by a second Gemm."""
    rng = np.random.default_rng(seed)
    body = helper.make_graph(
        [helper.make_node("Mul", ["row", "scale"], ["scaled"], name="scale_row"),
         helper.make_node("Add", ["acc", "scaled"], ["acc_out"])],
        "scan_body", [_value("acc", [4]), _value("row", [4])], [_value("acc_out", [4]), _value("scaled", [4])],
        [numpy_helper.from_array((1 + rng.random(4)).astype(np.float32), "scale")])
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("ReduceSum", ["h", "zero"], ["start"], keepdims=0),
             helper.make_node("Scan", ["start", "h"], ["total", "rows_out"], body=body, num_scan_inputs=1,
                              scan_input_axes=[axis], scan_output_axes=[axis], name="rows"),
             helper.make_node("Add", ["rows_out", "total"], ["both"]),
             helper.make_node("Gemm", ["both", "w2"], ["y"], name="fc2")]
    inits = {**_weights(rng, w1=(5, 4), w2=(4, 2)), "zero": np.array([0], np.int64)}
    return _model(nodes, [_value("x", [4, 5])], [_value("y", [4, 2])], inits)


def test_a_bias_shared_with_a_branch_is_one_copy_per_reader():
    """Exporters write equal constants (zero biases) once: a branch's conv sharing the stem's bias
    must not tie the two convs' channels together, in a body as in the main graph."""
    proto = cond_cnn(stem=4, out=4)
    light = next(a.g for a in proto.graph.node[2].attribute if a.name == "else_branch").node[0]
    light.input[2] = "b1"
    model = load(proto)
    graph = DependencyGraph(model)
    assert {g.id for g in graph.prunable_groups} == {"stem", "heavy_a", "light", "tail"}
    feeds = _feeds(model.proto)
    _removal_equals_masking(model, graph, {"stem": [1], "light": [0, 3]}, [feeds, {**feeds, "cond": np.array(False)}])


def test_a_scan_body_prunes_unless_it_scans_the_channel_axis():
    model = load(scan_rows())
    graph = DependencyGraph(model)
    assert [g.id for g in graph.prunable_groups] == ["fc1"], [(g.id, g.frozen) for g in graph.groups]
    assert {c.weight for c in graph.group("fc1").couplings} == {"w1", "scale", "w2"}
    _removal_equals_masking(model, graph, {"fc1": [0, 2]}, [_feeds(model.proto)])
    # scanning along the channel axis would change the number of iterations
    graph = DependencyGraph(load(scan_rows(axis=1)))
    assert "Scan node 'rows' scans input 'h' along its channel axis" in graph.group("fc1").frozen


# -- Loop --------------------------------------------------------------------------------------------


def test_a_loop_carried_state_prunes_with_its_body():
    model = load(loop_mlp())
    graph = DependencyGraph(model)
    assert {g.id for g in graph.prunable_groups} == {"fc1", "fc2"}, [(g.id, g.frozen) for g in graph.groups]
    state = graph.group("fc1")
    # the first Gemm's outputs, the body's Gemm (its inputs and outputs) and the second Gemm's inputs
    assert {(c.weight, c.axis) for c in state.couplings} == {("fc1", 1), ("fb1", 0), ("bw", 0), ("bw", 1),
                                                              ("bb", 0), ("fc2", 0)}
    assert {mp.node for mp in state.mask_points} == {"refine", "fc2"}
    # the body's Gemm counts once per trip
    assert model.macs() == 5 * 6 + 3 * 36 + 6 * 4 + 4 * 3
    removed = _removal_equals_masking(model, graph, {"fc1": [1, 4], "fc2": [0]}, [_feeds(model.proto)])
    assert removed.macs() == 5 * 4 + 3 * 16 + 4 * 3 + 3 * 3
    body = next(a.g for a in removed.node("refine_loop").attribute if a.name == "body")
    assert [v.type.tensor_type.shape.dim[1].dim_value for v in (body.input[2], body.output[1])] == [4, 4]
    assert {t.name: list(t.dims) for t in removed.proto.graph.initializer}["bw"] == [4, 4]


@settings(max_examples=10, deadline=None, database=None)
@given(st.data(), st.integers(2, 8), st.integers(1, 4), st.booleans(), st.integers(1, 3))
def test_loop_removal_equals_masking_for_any_sizes(data, hidden, trips, scan, batch):
    model = load(loop_mlp(hidden, trips, scan=scan, seed=hidden + trips))
    graph = DependencyGraph(model)
    assert {g.id for g in graph.prunable_groups} == {"fc1", "fc2"}
    _removal_equals_masking(model, graph, _draw_removals(data, graph.prunable_groups), [_feeds(model.proto, batch)])


def loop_with_if(hidden: int = 5, seed: int = 0) -> onnx.ModelProto:
    """A Loop whose body chooses between two Gemms of its own with an If on a graph input, nested
    control flow with the state's channels going in and out of the branches."""
    rng = np.random.default_rng(seed)
    branch = {name: helper.make_graph([helper.make_node("Gemm", ["h_in", f"w_{name}"], [f"y_{name}"], name=name)],
                                      name, [], [_value(f"y_{name}", ["N", hidden])],
                                      _inits(_weights(rng, **{f"w_{name}": (hidden, hidden)})))
              for name in ("left", "right")}
    body = helper.make_graph(
        [helper.make_node("If", ["pick"], ["chosen"], then_branch=branch["left"], else_branch=branch["right"],
                          name="pick_if"),
         helper.make_node("Tanh", ["chosen"], ["h_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"])], "body",
        [_value("i", [], TensorProto.INT64), _value("c_in", [], TensorProto.BOOL), _value("h_in", ["N", hidden])],
        [_value("c_out", [], TensorProto.BOOL), _value("h_out", ["N", hidden])])
    nodes = [helper.make_node("Gemm", ["x", "fc1"], ["h0"], name="fc1"),
             helper.make_node("Loop", ["trips", "go", "h0"], ["h"], body=body, name="outer_loop"),
             helper.make_node("Gemm", ["h", "fc2"], ["y"], name="fc2")]
    inits = {**_weights(rng, fc1=(3, hidden), fc2=(hidden, 2)), "trips": np.array(2, np.int64), "go": np.array(True)}
    return _model(nodes, [_value("x", ["N", 3]), _value("pick", [], TensorProto.BOOL)], [_value("y", ["N", 2])],
                  inits)


def test_an_if_inside_a_loop_body_prunes_with_the_state():
    model = load(loop_with_if())
    graph = DependencyGraph(model)
    assert [g.id for g in graph.prunable_groups] == ["fc1"], [(g.id, g.frozen) for g in graph.groups]
    assert {c.weight for c in graph.group("fc1").couplings} == {"fc1", "w_left", "w_right", "fc2"}
    assert model.macs() == 3 * 5 + 2 * 25 + 5 * 2  # the costlier branch once per trip
    feeds = _feeds(model.proto)
    removed = _removal_equals_masking(model, graph, {"fc1": [1, 3]}, [feeds, {**feeds, "pick": np.array(False)}])
    assert removed.macs() == 3 * 3 + 2 * 9 + 3 * 2


def test_a_body_without_declared_state_shapes_stays_whole_and_its_macs_are_named_uncounted():
    proto = loop_mlp()
    body = proto.graph.node[2].attribute[0].g
    for v in [*body.input[2:], *body.output[1:]]:
        v.type.tensor_type.ClearField("shape")  # onnx's Loop inference does not give a state a shape
    model = load(proto)
    assert model.uncounted_macs() == ["fc2", "refine"]  # (the final state has no shape either)
    graph = DependencyGraph(model)
    assert "Gemm node 'refine' reads an unknown rank" in graph.group("fc1").frozen


def test_a_state_that_starts_outside_every_group_freezes_the_body_units():
    graph = DependencyGraph(load(loop_mlp(state_input=True)))
    reason = graph.group("refine").frozen
    assert "Loop node 'refine_loop' carries state 0 into the next iteration with other channels" in reason
    assert "fc2" in {g.id for g in graph.prunable_groups}


def test_a_search_sees_cuts_inside_bodies_from_the_control_flow_node_on():
    from pyprune.options import Limits, PruneOptions
    from pyprune.search.spaces import ChannelSpace

    model = load(cond_cnn())
    space = ChannelSpace(model, DependencyGraph(model), PruneOptions(limits=Limits(round_to=1)), None)
    # recovery corrects what lies below the If for a cut inside its branch
    assert space.sources()["heavy_a"] == ["gate"] and space.sources()["stem"] == ["gate"]
    assert space.sources()["tail"] == ["head"]
    depth = {s.id: s.depth for s in space.slots}
    assert depth["heavy_a"] == depth["light"] == [n.name for n in model.nodes].index("gate")
    # the cost of a state counts the branch's convs as the model's MACs count them
    full = space.cost({})
    assert full.macs == model.macs()
    cut = space.cost({"heavy_a": 2})
    assert cut.macs == model.macs() - 2 * 36 * (6 * 9 + 4 * 9)


# -- the whole pipeline ----------------------------------------------------------------------------------


@pytest.mark.parametrize("importance", ["l2", "wanda"])  # (nothing is measured inside a body: magnitude there)
@pytest.mark.parametrize("build, feeds", [
    (lambda: cond_cnn(stem=8, inner=8, out=8, tail=8), {"cond": np.array(True)}),
    (lambda: loop_mlp(hidden=16), {}),
], ids=["if", "loop"])
def test_pruning_reaches_into_the_bodies(build, feeds, importance, tmp_path):
    proto = build()
    model = load(proto)
    data = {**_feeds(proto, batch=16), **feeds}
    result = pp.prune(model, pp.Dataset(data), strategy="oneshot", target=pp.MACs(0.5), max_drop=None,
                      importance=importance, measure_latency=False, quiet=True)
    assert result.met, result.statement
    assert result.model.macs() <= 0.52 * model.macs()
    path = result.model.save(tmp_path / "pruned.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    again = onnx.load(path)
    sample = {k: (v[:2] if v.ndim else v) for k, v in data.items()}
    for got, want in zip(_run(again, sample), _run(proto, sample)):
        assert got.shape == want.shape


@pytest.mark.parametrize("strategy", ["oneshot", "greedy"])
def test_weight_masks_reach_into_the_bodies(strategy):
    proto = loop_mlp(hidden=16)
    model = load(proto)
    assert "bw" in {w.name for w in maskable_weights(model)}  # the Loop body's Gemm
    result = pp.prune(model, pp.Dataset(_feeds(proto, batch=16)), strategy=strategy, granularity="weight",
                      target=pp.Sparsity(0.5), max_drop=None if strategy == "oneshot" else 0.2,
                      measure_latency=False, quiet=True)
    assert result.met, result.statement
    onnx.checker.check_model(result.model.proto, full_check=True)
    assert np.count_nonzero(result.model.weight("bw")) < model.weight("bw").size
    sample = _feeds(proto, batch=2)
    assert _run(result.model, sample)[0].shape == _run(proto, sample)[0].shape
