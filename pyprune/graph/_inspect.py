"""What a model offers to prune: its groups, layers and weights, with sizes, costs and reasons.

:func:`inspect_model` gathers the facts as plain JSON-ready data (what ``pyprune inspect --json``
prints); :func:`format_inspect` lays them out as tables for a terminal.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx

from .. import core
from .._table import format_table
from ._dependency import DependencyGraph
from ._model import Model, load
from ._weights import maskable_weights

__all__ = ["inspect_model", "format_inspect"]

# N:M pattern whose applicability the weights table reports (the one sparse kernels support).
_NM = (2, 4)


def inspect_model(
    model: Model | str | os.PathLike | bytes | onnx.ModelProto,
    graph: DependencyGraph | None = None,
) -> dict[str, Any]:
    """Everything pyprune can prune in ``model``, as a JSON-serialisable dict.

    Keys: ``model`` (path, opset, node count, inputs/outputs and the totals params, nonzeros,
    macs, file_size), ``groups`` (channel/neuron groups: units, params and MACs they control,
    coupled weights, frozen reason), ``layers`` (removable layers: kind, nodes, params, MACs,
    frozen reason), ``weights`` (Conv/Gemm/MatMul weight operands: shape, params, non-zeros,
    reduction axis, whether 2:4 applies) and ``summary`` (counts of the above). MACs are per
    sample (symbolic dimensions count 1). ``graph`` may be passed when already built.
    """
    if not isinstance(model, Model):
        model = load(model)
    graph = graph or DependencyGraph(model)
    groups = [
        {
            "id": g.id,
            "root": g.root,
            "op_type": g.op_type,
            "units": int(g.size),
            "params": _total(g.params_per_unit),
            "macs": _total(g.macs_per_unit),
            "weights": sorted({c.weight for c in g.couplings}),
            "mask_points": len(g.mask_points),
            "frozen": g.frozen,
        }
        for g in graph.groups
    ]
    layers = [
        {
            "id": layer.id,
            "kind": layer.kind,
            "nodes": len(layer.nodes),
            "input": layer.bypass[0],
            "output": layer.bypass[1],
            "params": int(layer.params),
            "macs": int(layer.macs),
            "frozen": layer.frozen,
        }
        for layer in graph.layers
    ]
    weights = []
    for w in maskable_weights(model):
        array = model.weight(w.name)
        weights.append(
            {
                "name": w.name,
                "op_type": w.op_type,
                "nodes": list(w.nodes),
                "shape": list(w.shape),
                "params": w.size,
                "nonzeros": _nonzeros(array),
                "reduction_axis": w.reduction_axis,
                "nm": w.nm_reason(_NM[1]) or f"{_NM[0]}:{_NM[1]}",
            }
        )
    prunable_groups = [g for g in graph.groups if g.prunable]
    symbolic = sorted({str(d) if d else "unnamed" for spec in model.input_specs() if spec.shape
                       for d in spec.shape[1:] if not isinstance(d, int)})
    info = {
        "model": {
            "path": None if model.path is None else str(model.path),
            "opset": model.opset,
            "converted_from": model.converted_from,
            # the input sizes MACs are counted at: the model's own unless a view fixed them
            # (Model.with_input_shapes); symbolic sizes left count as 1
            "assumed_shapes": model.assumed_shapes,
            "symbolic_counted_as_1": symbolic,
            "uncounted_macs": model.uncounted_macs(),
            "nodes": len(model.nodes),
            "inputs": [_spec(s) for s in model.input_specs()],
            "outputs": [_spec(s) for s in model.output_specs()],
            "params": int(model.params()),
            "nonzeros": int(model.nonzeros()),
            "macs": int(model.macs()),
            "file_size": int(model.file_size()),
        },
        "groups": groups,
        "control_flow": dict(graph.control_flow),
        "layers": layers,
        "weights": weights,
        "summary": {
            "groups": len(groups),
            "prunable_groups": len(prunable_groups),
            "prunable_units": int(sum(g.size for g in prunable_groups)),
            "layers": len(layers),
            "prunable_layers": sum(1 for layer in layers if layer["frozen"] is None),
            "weights": len(weights),
            "nm_weights": sum(1 for w in weights if w["nm"] == f"{_NM[0]}:{_NM[1]}"),
        },
    }
    return info


def _total(per_unit: np.ndarray | None) -> int | None:
    return None if per_unit is None else int(np.asarray(per_unit).sum())


def _nonzeros(array: np.ndarray) -> int:
    if array.dtype in (np.float16, np.float32, np.float64):
        return core.count_nonzero(array)
    return int(np.count_nonzero(array))


def _spec(spec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "dtype": None if spec.dtype is None else str(spec.dtype),
        "shape": spec.shape,
    }


# -- text ------------------------------------------------------------------------------------------


def format_inspect(info: dict[str, Any]) -> str:
    """The dict of :func:`inspect_model` as text tables (ids in full: they are what users pass
    back to pyprune; frozen reasons in full: they are the point)."""
    m, s = info["model"], info["summary"]
    converted = (f" (converted from opset {m['converted_from']} with onnx.version_converter)"
                 if m.get("converted_from") else "")
    lines = [
        f"{m['path'] or '<in memory>'}: opset {m['opset']}{converted}, {m['nodes']} nodes",
        f"  params {_human(m['params'])}, non-zeros {_human(m['nonzeros'])} "
        f"({_percent(m['nonzeros'], m['params'])}), MACs {_human(m['macs'])} per sample, "
        f"file {_bytes(m['file_size'])}",
        "  inputs:  " + "; ".join(_fmt_spec(v) for v in m["inputs"]),
        "  outputs: " + "; ".join(_fmt_spec(v) for v in m["outputs"]),
        _macs_basis(m),
        "",
        f"Channel groups: {s['prunable_groups']} of {s['groups']} prunable, "
        f"{s['prunable_units']} prunable units",
    ]
    lines += _table_lines(
        ["group", "op", "units", "params", "MACs", "frozen"],
        [
            [g["id"], g["op_type"], str(g["units"]), _human(g["params"]),
             _human(g["macs"]), g["frozen"] or ""]
            for g in info["groups"]
        ],
    )
    if info.get("control_flow"):
        lines += ["", "Inside control flow (not pruned):"]
        lines += [f"  {k}: {v}" for k, v in info["control_flow"].items()]
    lines += ["", f"Layers: {s['prunable_layers']} of {s['layers']} removable"]
    lines += _table_lines(
        ["layer", "kind", "nodes", "params", "MACs", "frozen"],
        [
            [layer["id"], layer["kind"], str(layer["nodes"]),
             _human(layer["params"]), _human(layer["macs"]), layer["frozen"] or ""]
            for layer in info["layers"]
        ],
    )
    nm = f"{_NM[0]}:{_NM[1]}"
    lines += ["", f"Weights: {s['weights']} maskable, {s['nm_weights']} take {nm}"]
    lines += _table_lines(
        ["weight", "node", "op", "shape", "params", "non-zeros", nm],
        [
            [w["name"], w["nodes"][0] + (f" (+{len(w['nodes']) - 1})" if len(w["nodes"]) > 1 else ""),
             w["op_type"], "x".join(map(str, w["shape"])),
             _human(w["params"]), _percent(w["nonzeros"], w["params"]),
             "yes" if w["nm"] == nm else f"no: {w['nm']}"]
            for w in info["weights"]
        ],
    )
    return "\n".join(lines)


def _macs_basis(m: dict[str, Any]) -> str:
    """Which input sizes the MACs are counted at, and what to do when some are unknown."""
    at = f" (sizes from {m['sizes_from']})" if m.get("sizes_from") and m.get("assumed_shapes") else ""
    basis = "  MACs counted at the inputs above" + at + ", batch 1"
    unknown = m.get("symbolic_counted_as_1") or []
    if unknown:
        named = [d for d in unknown if d != "unnamed"]
        hint = f"--dim {named[0]}=N" if named else "--input-shape NAME:D0,D1,..."
        basis += (f"; symbolic sizes counted as 1: {', '.join(unknown)} (give {hint}, --input-shape or --data "
                  "for the MACs of real inputs)")
    uncounted = m.get("uncounted_macs") or []
    if uncounted:
        basis += (f"; {len(uncounted)} node(s) with unknown shapes not counted ({', '.join(uncounted[:3])}"
                  f"{', ...' if len(uncounted) > 3 else ''}): a lower bound")
    return basis


def _table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    return format_table(header, rows, indent="  ", underline=False).split("\n")


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))


def _bytes(n: int) -> str:
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {suffix}"
    return f"{n} B"


def _percent(part: int, whole: int) -> str:
    return "-" if not whole else f"{100.0 * part / whole:.1f}%"


def _fmt_spec(spec: dict[str, Any]) -> str:
    shape = "?" if spec["shape"] is None else "[" + ", ".join(
        "?" if d is None else str(d) for d in spec["shape"]
    ) + "]"
    return f"{spec['name']} {spec['dtype'] or 'non-tensor'} {shape}"
