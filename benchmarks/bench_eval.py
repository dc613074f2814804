"""Time per candidate evaluation: one masked session vs a session rebuilt per candidate vs plain
inference, on a ResNet-18-sized ONNX model (built with onnx.helper, random weights, no torch).

    python benchmarks/bench_eval.py            # batch 1 and 8, 2 threads
    python benchmarks/bench_eval.py --quick    # smoke run

Structured candidates mask channels through fed activation masks (weights stay constant);
weight candidates feed masked copies of overridable weights. The rebuild baseline applies the same
candidate to a copy of the model, serialises it and opens a new ONNX Runtime session.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from pyprune.data import Dataset
from pyprune.evaluate import MaskedSession, session_options
from pyprune.graph import DependencyGraph, Model, load
from pyprune.surgery import insert_masks


def resnet18(seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 (ImageNet layout, 1000 classes), input [N, 3, 224, 224], random weights."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def param(name: str, values: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def weight(name: str, shape: tuple[int, ...], std: float) -> str:
        return param(name, rng.standard_normal(shape) * std)

    def conv_bn(x: str, name: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        w = weight(f"{name}.weight", (cout, cin, k, k), np.sqrt(2.0 / (cin * k * k)))
        nodes.append(helper.make_node("Conv", [x, w], [f"{name}.out"], name=name, kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))  # fmt: skip
        bn = [
            param(f"{name}.bn.scale", rng.uniform(0.5, 1.5, cout)),
            weight(f"{name}.bn.bias", (cout,), 0.1),
            weight(f"{name}.bn.mean", (cout,), 0.1),
            param(f"{name}.bn.var", rng.uniform(0.5, 1.5, cout)),
        ]
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.out", *bn], [f"{name}.bn.out"], name=f"{name}.bn"))
        if not relu:
            return f"{name}.bn.out"
        nodes.append(helper.make_node("Relu", [f"{name}.bn.out"], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    x = conv_bn("input", "conv1", 3, 64, 7, 2, relu=True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = "pool", 64
    for stage, cout in enumerate([64, 128, 256, 512], start=1):
        for b in range(2):
            stride = 2 if stage > 1 and b == 0 else 1
            name = f"layer{stage}.{b}"
            h = conv_bn(x, f"{name}.conv1", cin, cout, 3, stride, relu=True)
            h = conv_bn(h, f"{name}.conv2", cout, cout, 3, 1, relu=False)
            shortcut = x if stride == 1 and cin == cout else conv_bn(x, f"{name}.down", cin, cout, 1, stride, relu=False)
            nodes.append(helper.make_node("Add", [h, shortcut], [f"{name}.sum"], name=f"{name}.add"))
            nodes.append(helper.make_node("Relu", [f"{name}.sum"], [f"{name}.out"], name=f"{name}.relu"))
            x, cin = f"{name}.out", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    nodes.append(helper.make_node("Gemm", ["flat", weight("fc.weight", (1000, 512), 0.04), weight("fc.bias", (1000,), 0.01)],
                                  ["logits"], name="fc", transB=1))  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def timed_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def run_in_new_session(proto: onnx.ModelProto, feed: dict[str, np.ndarray], threads: int) -> None:
    """The rebuild baseline's last step: serialise, open a new session, run once."""
    session = ort.InferenceSession(proto.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
    session.run(None, feed)


#: Rounds of timed blocks per batch size; candidates are split evenly across them.
ROUNDS = 4


def with_weight(model: Model, name: str, values: np.ndarray) -> onnx.ModelProto:
    """A copy of the model's proto with one initializer replaced."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    for tensor in proto.graph.initializer:
        if tensor.name == name:
            tensor.CopyFrom(numpy_helper.from_array(values, name))
    return proto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few candidates, batch 1 only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    threads = args.threads
    candidates = 4 if args.quick else 20
    rebuilds = 2 if args.quick else 8
    batches = [1] if args.quick else [1, 8]

    model = load(resnet18())
    graph = DependencyGraph(model)
    groups = graph.prunable_groups
    weight_names = [n for n in model.weight_names if n.endswith(".weight") and model.weight(n).ndim == 4]
    rng = np.random.default_rng(1)
    # Candidates are drawn before timing: each structured one keeps a random half of every
    # group's channels; each weight candidate changes the magnitude mask of one conv weight.
    structured = [{g.id: rng.random(g.size) < 0.5 for g in groups} for _ in range(candidates)]
    weight_cands = []
    for i in range(candidates):
        name = weight_names[i % len(weight_names)]
        w = model.weight(name)
        weight_cands.append((name, np.abs(w) > np.quantile(np.abs(w), rng.uniform(0.2, 0.8))))

    print(f"ResNet-18 ({model.params() / 1e6:.1f} M params, {model.macs() / 1e9:.2f} GMACs), "
          f"{threads} threads, {candidates} candidates ({rebuilds} for rebuilds), ms per candidate")  # fmt: skip
    print(f"structured: {len(groups)} channel groups on {sum(len(g.mask_points) for g in groups)} mask points; "
          f"weights: {len(weight_names)} conv weights overridable, one changed per candidate")  # fmt: skip
    header = (
        f"{'batch':>5} | {'plain':>8} | {'struct':>8} {'x plain':>7} | {'rebuild':>8} {'speedup':>7} | "
        f"{'weights':>8} {'x plain':>7} | {'rebuild':>8} {'speedup':>7}"
    )
    print(header)
    print("-" * len(header))
    for batch in batches:
        x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        data = Dataset(x)
        feed = {"input": x}
        plain = ort.InferenceSession(model.proto.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
        masked = MaskedSession(model, data, groups=groups, threads=threads, batch_size=batch)
        overridable = MaskedSession(model, data, weights=weight_names, threads=threads, batch_size=batch)
        for i in range(2):  # warm-up
            plain.run(None, feed)
            masked.run(structured[i])
            overridable.run(weights=dict([weight_cands[i]]))

        def structured_rebuild(cand: dict[str, np.ndarray]) -> None:
            # The same candidate as constant masks in a modified copy (the graph's masked oracle).
            run_in_new_session(insert_masks(model, cand, graph).proto, feed, threads)

        def weight_rebuild(name: str, mask: np.ndarray) -> None:
            run_in_new_session(with_weight(model, name, model.weight(name) * mask), feed, threads)

        # Timed in blocks (one mode at a time, a warm-up run first), alternating modes round by
        # round so that load from other processes hits every column alike. Switching session on
        # every run would let the previous session's spinning worker threads compete with the
        # next one and roughly double and scatter every figure (ONNX Runtime keeps its threads
        # spinning for a while after a run).
        times: dict[str, list[float]] = {k: [] for k in ("plain", "struct", "weights", "rs", "rw")}
        per_round = max(candidates // ROUNDS, 1)
        for r in range(ROUNDS):
            chosen = range(r * per_round, min((r + 1) * per_round, candidates))
            plain.run(None, feed)
            for i in chosen:
                times["plain"].append(timed_ms(lambda: plain.run(None, feed)))
            masked.run(structured[chosen[0]])
            for i in chosen:
                times["struct"].append(timed_ms(lambda: masked.run(structured[i])))
            overridable.run(weights=dict([weight_cands[chosen[0]]]))
            for i in chosen:
                name, mask = weight_cands[i]
                times["weights"].append(timed_ms(lambda: overridable.run(weights={name: mask})))
            for i in [c for c in chosen if c < rebuilds]:
                name, mask = weight_cands[i]
                times["rs"].append(timed_ms(lambda: structured_rebuild(structured[i])))
                times["rw"].append(timed_ms(lambda: weight_rebuild(name, mask)))
        t = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{batch:>5} | {t['plain']:8.2f} | {t['struct']:8.2f} {t['struct'] / t['plain']:6.2f}x | "
            f"{t['rs']:8.2f} {t['rs'] / t['struct']:6.1f}x | "
            f"{t['weights']:8.2f} {t['weights'] / t['plain']:6.2f}x | {t['rw']:8.2f} {t['rw'] / t['weights']:6.1f}x"
        )
    print(
        "struct/weights: one masked session per search; rebuild: copy + serialise + new session + run;"
        " speedup = rebuild / masked"
    )


if __name__ == "__main__":
    main()
