"""Channel pruning of torchvision-style ResNet-18 and MobileNetV2: pyprune on the ONNX file beside
Torch-Pruning on the torch module, at equal widths, timed in one run.

For each architecture (random weights, eval mode, exported by torch.onnx at opset 17, input
1x3x224x224) pyprune loads the file, finds the dependency groups, scores every group's channels
by L1 magnitude (the sum over the group's producer slices), removes 50% of each prunable group's
channels (the classifier's outputs are graph outputs and stay) and saves the result.

Torch-Pruning (torch_pruning, L1 magnitude importance, the classifier ignored) then prunes the same
torch module, with the same weights, to exactly the widths pyprune's written model has: the kept
channel count of every group is read from that file, the group is mapped to the torch modules
whose outputs it holds (the exporter's node names carry the module path), and Torch-Pruning's
dependency graph prunes the matching group to that count, its own importance choosing which
channels go. A group with no exact counterpart keeps Torch-Pruning's own 50% count, and the
script says so. Its result is exported with the same torch.onnx settings; every Conv/Gemm weight
shape of the two pruned files is compared, and so are the widths Torch-Pruning's own 50% pruner
would have left.

Printed side by side for the original, pyprune's and Torch-Pruning's model: parameters, MACs,
file size and ONNX Runtime latency (pyprune's session options for all three: all graph
optimisations, 2 intra-op threads; batch 1; median of the timed runs after warm-up, the three
models timed in alternating blocks), the time each pruner took, the largest difference between
pyprune's model and the original with the same channels masked (the removal-equals-masking oracle,
on real exported graphs) and between Torch-Pruning's exported file and its torch module (the
export is faithful), and the load average over the run.

    python benchmarks/bench_structure.py            # both models, 60 timed runs each
    python benchmarks/bench_structure.py --quick    # ResNet-18 only, 6 timed runs

Needs torch and torch-pruning (pyprune itself does not).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np

from pyprune import core
from pyprune.evaluate import make_session
from pyprune.graph import DependencyGraph, Group, Model, load
from pyprune.surgery import insert_masks, remove_units

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _torch_models is a sibling module of this script, not a package

import torch  # noqa: E402
import torch_pruning as tp  # noqa: E402
from _torch_models import CLASSIFIERS, build, export_onnx, onnx_scope  # noqa: E402
from torch import nn  # noqa: E402

RATIO = 0.5
THREADS = 2
INPUT_SHAPE = (1, 3, 224, 224)
WIDTHS = (12, 12, 15)  # printed columns: original, pyprune, Torch-Pruning


# ------------------------------------------------------------------------------------- pyprune
def l1_scores(model: Model, group: Group) -> np.ndarray:
    """L1 magnitude per unit: the group's producer ("out") slices, summed over couplings."""
    scores = np.zeros(group.size, dtype=np.float64)
    for c in group.couplings:
        if c.role != "out":
            continue
        norms = core.slice_norms(model.weight(c.weight), c.axis, "l1")
        owned = c.index >= 0
        np.add.at(scores, c.index[owned], norms[owned])
    return scores


def prune(model: Model) -> tuple[Model, dict[str, np.ndarray], DependencyGraph]:
    """Remove ``RATIO`` of every prunable group's channels, lowest L1 first."""
    graph = DependencyGraph(model)
    removals = {}
    for group in graph.prunable_groups:
        k = int(group.size * RATIO)
        if 0 < k < group.size:
            removals[group.id] = core.lowest_slices(l1_scores(model, group), k)
    return remove_units(model, removals, graph), removals, graph


def max_masked_diff(model: Model, pruned: Model, graph: DependencyGraph,
                    removals: dict[str, np.ndarray], x: np.ndarray) -> float:
    """Largest |pruned - masked original| over the outputs."""
    keep = {}
    for group_id, idx in removals.items():
        mask = np.ones(graph.group(group_id).size, dtype=bool)
        mask[idx] = False
        keep[group_id] = mask
    masked = insert_masks(model, keep, graph)
    want = make_session(masked.proto, THREADS).run(None, {"input": x})
    got = make_session(pruned.proto, THREADS).run(None, {"input": x})
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))


def kept_widths(written: Model) -> dict[frozenset[str], int]:
    """Channels per prunable group of a written model, keyed by the group's producer nodes.

    Producers (the nodes whose output channels the group holds: Conv/Gemm rows, not the depthwise
    convolutions and biases that follow them) identify a group across the two libraries; the
    group's size in the written file is what pyprune kept.
    """
    return {frozenset(c.node for c in g.couplings if c.role == "out"): g.size
            for g in DependencyGraph(written).prunable_groups}


def frozen_report(graph: DependencyGraph) -> list[str]:
    return [f"{g.id} ({g.size} ch): {g.frozen}" for g in graph.groups if not g.prunable]


# ------------------------------------------------------------------------------- Torch-Pruning
def is_producer(module: nn.Module) -> bool:
    """A layer whose output channels it owns (depthwise convolutions only follow their input)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def torch_pruning_to(module: nn.Module, name: str, widths: dict[frozenset[str], int]) -> list[str]:
    """Prune ``module`` in place with Torch-Pruning so each group keeps ``widths`` channels.

    ``widths`` is keyed by the producers' ONNX node names (:func:`kept_widths`). Torch-Pruning's
    own L1 importance picks the channels. Returns one line for each group that could not be
    matched exactly (on either side); such a Torch-Pruning group keeps its own 50% count.
    """
    example = torch.zeros(INPUT_SHAPE)
    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
    importance = tp.importance.MagnitudeImportance(p=1)
    node_of = {m: f"{onnx_scope(n)}/{'Gemm' if isinstance(m, nn.Linear) else 'Conv'}"
               for n, m in module.named_modules() if is_producer(m)}
    classifier = module.get_submodule(CLASSIFIERS[name])
    plans, unmatched, used = [], [], set()
    # every group's channels are chosen on the unpruned module, then the groups are pruned
    for group in graph.get_all_groups(ignored_layers=[classifier], root_module_types=(nn.Conv2d, nn.Linear)):
        root, handler = group[0].dep.target.module, group[0].dep.handler
        producers = frozenset(node_of[dep.target.module] for dep, _ in group
                              if graph.is_out_channel_pruning_fn(dep.handler) and is_producer(dep.target.module))
        size = graph.get_out_channels(root)
        kept = widths.get(producers)
        if kept is None:
            kept = int(size * (1 - RATIO))
            unmatched.append(f"Torch-Pruning group {sorted(producers)} has no pyprune match: its own {kept} of {size}")
        used.add(producers)
        order = torch.argsort(importance(group))
        plans.append((root, handler, order[: size - kept].tolist()))
    unmatched += [f"pyprune group {sorted(p)} has no Torch-Pruning match" for p in widths.keys() - used]
    for root, handler, idxs in plans:
        if idxs:
            graph.get_pruning_group(root, handler, idxs).prune()
    return unmatched


def torch_pruning_own(module: nn.Module, name: str) -> None:
    """Torch-Pruning's own choice: its pruner, L1 magnitude, ``RATIO`` of every group."""
    pruner = tp.pruner.BasePruner(module, torch.zeros(INPUT_SHAPE),
                                  importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=RATIO,
                                  ignored_layers=[module.get_submodule(CLASSIFIERS[name])])
    pruner.step()


def widths_of(module: nn.Module) -> dict[str, int]:
    return {n: m.weight.shape[0] for n, m in module.named_modules() if is_producer(m)}


# ---------------------------------------------------------------------------------- comparison
def weight_shape_differences(a: Model, b: Model) -> tuple[int, list[str]]:
    """(Conv/Gemm nodes compared, one line per node whose weight shapes differ), by node name."""
    def shapes(model: Model) -> dict[str, tuple[int, ...]]:
        return {n.name: model.weight(n.input[1]).shape for n in model.nodes if n.op_type in ("Conv", "Gemm")}

    sa, sb = shapes(a), shapes(b)
    lines = [f"{k}: pyprune {sa.get(k)}, Torch-Pruning {sb.get(k)}" for k in sorted(sa.keys() | sb.keys())
             if sa.get(k) != sb.get(k)]
    return len(sa.keys() | sb.keys()), lines


def block_latency(models: list[Model], runs: int, warmup: int, rounds: int = 3) -> list[tuple[float, float]]:
    """(median, fastest) ms per model over ``runs`` timed runs each.

    The models take turns in ``rounds`` blocks of consecutive runs (each block after its own
    warm-up), so that a change of load on the machine hits all of them alike, while no session's
    spinning worker threads compete with another session's run.
    """
    x = np.random.default_rng(1).standard_normal(INPUT_SHAPE).astype(np.float32)
    sessions = [make_session(m.proto, THREADS) for m in models]
    times: list[list[float]] = [[] for _ in sessions]
    per_round = [runs // rounds + (i < runs % rounds) for i in range(rounds)]
    for count in per_round:
        for session, log in zip(sessions, times):
            for _ in range(warmup):
                session.run(None, {"input": x})
            for _ in range(count):
                start = time.perf_counter()
                session.run(None, {"input": x})
                log.append(time.perf_counter() - start)
    return [(float(np.median(t) * 1e3), float(np.min(t) * 1e3)) for t in times]


def bench(name: str, workdir: Path, runs: int, warmup: int) -> dict:
    src = workdir / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(build(name), src)

    start = time.perf_counter()
    model = load(src)
    pruned, removals, graph = prune(model)
    out = pruned.save(workdir / f"{name}.pruned.onnx")
    seconds = time.perf_counter() - start
    widths = kept_widths(load(out))  # read back from the file pyprune wrote

    module = build(name)  # the same weights the exported file holds
    start = time.perf_counter()
    unmatched = torch_pruning_to(module, name, widths)
    tp_seconds = time.perf_counter() - start
    tp_out = workdir / f"{name}.torch_pruning.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp_model = load(export_onnx(module, tp_out))
        own = build(name)
        torch_pruning_own(own, name)
    matched = widths_of(module)
    own_differs = [f"{n}: own 50% {w}, at pyprune's widths {matched[n]}"
                   for n, w in widths_of(own).items() if matched[n] != w]
    compared, shape_differs = weight_shape_differences(pruned, tp_model)

    x = np.random.default_rng(0).standard_normal(INPUT_SHAPE).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    tp_diff = float(np.abs(make_session(tp_model.proto, THREADS).run(None, {"input": x})[0] - want).max())
    ops = [tp.utils.count_ops_and_params(m, torch.zeros(INPUT_SHAPE)) for m in (build(name), module)]

    latency = block_latency([model, pruned, tp_model], runs, warmup)
    return {
        "name": name,
        "params": [m.params() for m in (model, pruned, tp_model)],
        "macs": [m.macs() for m in (model, pruned, tp_model)],
        "tp_counter": ops,
        "size": [p.stat().st_size for p in (src, out, tp_out)],
        "latency": [t[0] for t in latency],
        "fastest": [t[1] for t in latency],
        "seconds": (seconds, tp_seconds),
        "diff": (max_masked_diff(model, pruned, graph, removals, x), tp_diff),
        "groups": (len(graph.prunable_groups), len(graph.groups)),
        "frozen": frozen_report(graph),
        "unmatched": unmatched,
        "shapes": (compared, shape_differs),
        "own_differs": own_differs,
    }


def report(r: dict, runs: int) -> None:
    def row(label: str, values: list[float | None], fmt: str, note: str = "", unit: str = "") -> None:
        cells = "".join(f"{f'{v:{fmt}}{unit}' if v is not None else '':>{w}}" for v, w in zip(values, WIDTHS))
        print(f"  {label:22}{cells}{note}")

    compared, shape_differs = r["shapes"]
    print(f"\n{r['name']}: {r['groups'][0]} of {r['groups'][1]} groups pruned by {RATIO:.0%}")
    if r["unmatched"]:
        print("  groups not matched exactly (Torch-Pruning kept its own 50% count there):")
        for line in r["unmatched"]:
            print(f"    {line}")
    if shape_differs:
        print(f"  widths differ in {len(shape_differs)} of {compared} Conv/Gemm weights:")
        for line in shape_differs:
            print(f"    {line}")
    else:
        print(f"  equal widths: all {compared} Conv/Gemm weight shapes of the two pruned files are the same")
    print(f"  {'':22}" + "".join(f"{h:>{w}}" for h, w in zip(("original", "pyprune", "Torch-Pruning"), WIDTHS)))
    m, p, s = r["macs"], r["params"], r["size"]
    row("GMACs (Conv/Gemm)", [v / 1e9 for v in m], ".3f", f"   pyprune/TP {m[1] / m[2]:.3f}")
    (tm0, tp0), (tm1, tp1) = r["tp_counter"]
    row("  Torch-Pruning count", [tm0 / 1e9, None, tm1 / 1e9], ".3f", "   (torch module: + BN/activation/add/pool)")
    row("params (M)", [v / 1e6 for v in p], ".3f", f"   pyprune/TP {p[1] / p[2]:.3f}")
    row("  Torch-Pruning count", [tp0 / 1e6, None, tp1 / 1e6], ".3f", "   (torch module: BN unfolded)")
    row("file (MB)", [v / 1e6 for v in s], ".2f")
    lat, fast = r["latency"], r["fastest"]
    row("latency median (ms)", lat, ".2f", f"   (ORT, {THREADS} threads, batch 1, median of {runs})")
    row("  speed-up", [None, lat[0] / lat[1], lat[0] / lat[2]], ".2f", f"   pyprune/TP latency {lat[1] / lat[2]:.2f}",
        unit="x")
    row("fastest run (ms)", fast, ".2f")
    row("  speed-up", [None, fast[0] / fast[1], fast[0] / fast[2]], ".2f", unit="x")
    row("time to prune (s)", [None, *r["seconds"]], ".2f",
        "   (pyprune: load, groups, scores, removal, save; TP: dependency graph, scores, removal)")
    print(f"  max |pyprune - masked original|: {r['diff'][0]:.3g}")
    print(f"  max |Torch-Pruning ONNX - its torch module|: {r['diff'][1]:.3g}")
    if r["own_differs"]:
        print("  Torch-Pruning's own 50% pruner would leave other widths:")
        for line in r["own_differs"]:
            print(f"    {line}")
    else:
        print("  Torch-Pruning's own 50% pruner leaves the same widths")
    for line in r["frozen"]:
        print(f"  frozen (pyprune): {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18 only, 6 timed runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per latency (default 60)")
    parser.add_argument("--models", nargs="+", choices=sorted(CLASSIFIERS), default=None)
    args = parser.parse_args(argv)
    runs = args.runs or (6 if args.quick else 60)
    warmup = 2 if args.quick else 5
    names = args.models or (["resnet18"] if args.quick else ["resnet18", "mobilenet_v2"])
    print(f"torch {version('torch')}, torch-pruning {version('torch-pruning')}, "
          f"onnxruntime {version('onnxruntime')}; "
          f"load average at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            report(bench(name, Path(tmp), runs, warmup), runs)
    print(f"\nload average at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
