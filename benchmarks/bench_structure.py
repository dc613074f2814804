"""Channel pruning of torchvision-style ResNet-18 and MobileNetV2, working on the ONNX file alone.

For each architecture (random weights, eval mode, exported by torch.onnx at opset 17, input
1x3x224x224) pyprune loads the file, finds the dependency groups, scores every group's channels
by L1 magnitude (the sum over the group's producer slices), removes 50% of each prunable group's
channels (the classifier's outputs are graph outputs and stay) and saves the result. Printed side
by side: parameters, MACs, file size and ONNX Runtime latency (pyprune's session options: all
graph optimisations, 2 intra-op threads; batch 1; median of the timed runs after warm-up, the two
models timed in alternating blocks) before and after, the time pyprune took, and the largest
difference between the pruned model and the original with the same channels masked (the
removal-equals-masking oracle, on real exported graphs). As a second baseline, the same
architectures built with half the channels in torch and exported directly are timed alongside:
a pruned file should run exactly as fast as the network that was narrow from the start.

Reference (Torch-Pruning 1.6.1 doing the same in PyTorch on this machine): ResNet-18
1.82 -> 0.49 GMACs, 11.7M -> 3.1M params, 3.9x faster; MobileNetV2 0.32 -> 0.093 GMACs,
2.9x faster.

    python benchmarks/bench_structure.py            # both models, 60 timed runs each
    python benchmarks/bench_structure.py --quick    # ResNet-18 only, 6 timed runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from pyprune import core
from pyprune.evaluate import make_session
from pyprune.graph import DependencyGraph, Group, Model, load
from pyprune.surgery import insert_masks, remove_units

HERE = Path(__file__).resolve().parent

REFERENCE = {  # Torch-Pruning 1.6.1, same pruning, measured on this machine
    "resnet18": {"macs": (1.82e9, 0.49e9), "params": (11.7e6, 3.1e6), "speedup": 3.9},
    "mobilenet_v2": {"macs": (0.32e9, 0.093e9), "params": None, "speedup": 2.9},
}
RATIO = 0.5
THREADS = 2


def reference_style_macs(model: Model) -> int:
    """MACs counted the way the reference numbers were (Torch-Pruning's op counter).

    That counter adds, to the Conv/Linear multiply-accumulates pyprune reports, one op per
    element for every BatchNorm output (two: scale and shift), activation, residual Add and
    pooling input. The ONNX export folds each BatchNorm into the Conv before it (torchvision puts
    one after every Conv), so here every Conv output counts two more per element.
    """
    def elements(value: str) -> int:
        return int(np.prod([d if isinstance(d, int) else 1 for d in model.shape(value)]))

    total = 0
    for node in model.nodes:
        total += model.node_macs(node)
        if node.op_type == "Conv":
            total += 2 * elements(node.output[0])
        elif node.op_type in ("Relu", "Clip", "Add", "Gemm"):
            total += elements(node.output[0])
        elif node.op_type in ("MaxPool", "GlobalAveragePool"):
            total += elements(node.input[0])
    return total


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
                    removals: dict[str, np.ndarray]) -> float:
    """Largest |pruned - masked original| over the outputs, on one random input."""
    keep = {}
    for group_id, idx in removals.items():
        mask = np.ones(graph.group(group_id).size, dtype=bool)
        mask[idx] = False
        keep[group_id] = mask
    masked = insert_masks(model, keep, graph)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    want = make_session(masked.proto, THREADS).run(None, {"input": x})
    got = make_session(pruned.proto, THREADS).run(None, {"input": x})
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))


def block_latency(models: list[Model], runs: int, warmup: int, rounds: int = 3) -> list[tuple[float, float]]:
    """(median, fastest) ms per model over ``runs`` timed runs each.

    The models take turns in ``rounds`` blocks of consecutive runs (each block after its own
    warm-up), so that a change of load on the machine hits all of them alike, while no session's
    spinning worker threads compete with another session's run.
    """
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
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


def frozen_report(graph: DependencyGraph) -> list[str]:
    return [f"{g.id} ({g.size} ch): {g.frozen}" for g in graph.groups if not g.prunable]


def bench(name: str, workdir: Path, runs: int, warmup: int) -> dict:
    sys.path.insert(0, str(HERE))
    from _torch_models import export_onnx  # torch is needed for the export only

    src = workdir / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(name, src)
        # the architecture the pruning leaves, built narrow in torch: the speed to match
        narrow = load(export_onnx(name, channel_scale=1 - RATIO))
    start = time.perf_counter()
    model = load(src)
    pruned, removals, graph = prune(model)
    out = pruned.save(workdir / f"{name}.pruned.onnx")
    seconds = time.perf_counter() - start
    diff = max_masked_diff(model, pruned, graph, removals)
    latency = block_latency([model, pruned, narrow], runs, warmup)
    return {
        "name": name,
        "params": (model.params(), pruned.params()),
        "macs": (model.macs(), pruned.macs()),
        "reference_macs": (reference_style_macs(model), reference_style_macs(pruned)),
        "size": (src.stat().st_size, out.stat().st_size),
        "latency": (latency[0][0], latency[1][0]),
        "fastest": (latency[0][1], latency[1][1]),
        "narrow": {"macs": narrow.macs(), "params": narrow.params(), "latency": latency[2][0]},
        "seconds": seconds,
        "diff": diff,
        "groups": (len(graph.prunable_groups), len(graph.groups)),
        "frozen": frozen_report(graph),
    }


def report(r: dict, runs: int) -> None:
    p0, p1 = r["params"]
    m0, m1 = r["macs"]
    s0, s1 = r["size"]
    l0, l1 = r["latency"]
    ref = REFERENCE[r["name"]]
    print(f"\n{r['name']}: {r['groups'][0]} of {r['groups'][1]} groups pruned by {RATIO:.0%}")
    print(f"  {'':14}{'before':>12}{'after':>12}{'ratio':>9}   Torch-Pruning 1.6.1")
    rm = ref["macs"]
    c0, c1 = r["reference_macs"]
    print(f"  {'GMACs':14}{m0 / 1e9:12.3f}{m1 / 1e9:12.3f}{m1 / m0:9.3f}   (Conv/Gemm only)")
    print(f"  {'GMACs as ref':14}{c0 / 1e9:12.3f}{c1 / 1e9:12.3f}{c1 / c0:9.3f}   "
          f"{rm[0] / 1e9:.2f} -> {rm[1] / 1e9:.3f} ({rm[1] / rm[0]:.3f}); "
          f"after vs reference: {100 * (c1 / rm[1] - 1):+.1f}%")
    rp = ref["params"]
    tp = f"{rp[0] / 1e6:.1f}M -> {rp[1] / 1e6:.1f}M ({rp[1] / rp[0]:.3f})" if rp else "-"
    print(f"  {'params (M)':14}{p0 / 1e6:12.3f}{p1 / 1e6:12.3f}{p1 / p0:9.3f}   {tp}")
    print(f"  {'file (MB)':14}{s0 / 1e6:12.2f}{s1 / 1e6:12.2f}{s1 / s0:9.3f}")
    print(f"  {'latency (ms)':14}{l0:12.2f}{l1:12.2f}{l0 / l1:8.2f}x   {ref['speedup']:.1f}x faster"
          f"   (ORT, {THREADS} threads, batch 1, median of {runs})")
    f0, f1 = r["fastest"]
    print(f"  {'fastest (ms)':14}{f0:12.2f}{f1:12.2f}{f0 / f1:8.2f}x")
    n = r["narrow"]
    print(f"  same widths built narrow in torch: {n['macs'] / 1e9:.3f} GMACs, "
          f"{n['params'] / 1e6:.3f} M params, {n['latency']:.2f} ms "
          f"(pruned / narrow latency {l1 / n['latency']:.2f})")
    print(f"  pyprune time: {r['seconds']:.2f} s (load, groups, scores, removal, save)")
    print(f"  max |pruned - masked original|: {r['diff']:.3g}")
    for line in r["frozen"]:
        print(f"  frozen: {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18 only, 6 timed runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per latency (default 60)")
    parser.add_argument("--models", nargs="+", choices=sorted(REFERENCE), default=None)
    args = parser.parse_args(argv)
    runs = args.runs or (6 if args.quick else 60)
    warmup = 2 if args.quick else 5
    names = args.models or (["resnet18"] if args.quick else ["resnet18", "mobilenet_v2"])
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            report(bench(name, Path(tmp), runs, warmup), runs)


if __name__ == "__main__":
    main()
