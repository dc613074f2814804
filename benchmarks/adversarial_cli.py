"""Adversarial inputs through the installed ``pyprune`` command: exit codes, untouched inputs, no stray files.

Builds a small workspace (a model, one with external weights, data files good and bad, recipes
that try to write where they must not) and runs each case through the console script installed
next to this interpreter, as a user would. For every case it checks, independently of pyprune:

* the exit code is one of the documented ones (0, 1, 2, 130) and the one the case expects;
* stderr holds no traceback;
* every input file is byte-identical afterwards;
* no file appeared outside the paths the case is allowed to write.

    python benchmarks/adversarial_cli.py            # every case
    python benchmarks/adversarial_cli.py --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOCUMENTED = {0, 1, 2, 130}


def _pyprune() -> list[str]:
    beside = Path(sys.executable).with_name("pyprune")
    return [str(beside)] if beside.is_file() else [shutil.which("pyprune") or "pyprune"]


def mlp(sizes=(8, 64, 32, 4), seed=0, bad_weight=False) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        if bad_weight and i == 1:
            w[0, 0] = np.nan
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"))
        x = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", sizes[0]])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", sizes[-1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def build(root: Path) -> None:
    onnx.save(mlp(), root / "model.onnx")
    onnx.save_model(mlp(seed=1), root / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    onnx.save(mlp(bad_weight=True), root / "nan_weight.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    np.savez(root / "calib.npz", input=x, label=y)
    np.savez(root / "extra.npz", input=x, label=y, test_input=x[:5], test_label=y[:5])
    np.savez(root / "nan.npz", input=np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), label=y)
    np.savez(root / "labels_out_of_range.npz", input=x, label=y + 10)
    np.savez(root / "string_labels.npz", input=x, label=np.array(["a"] * 64))
    np.savez(root / "empty_arrays.npz", input=x[:0], label=y[:0])
    (root / "zero.npz").write_bytes(b"")
    (root / "text.npz").write_text("not an archive")
    np.save(root / "array.npy", x)
    (root / "a_folder").mkdir()
    (root / "a_file").write_text("x")
    (root / "calib_link.npz").symlink_to(root / "calib.npz")
    step = '[[step]]\ngranularity = "channel"\nstrategy = "oneshot"\nparams = 0.7\nmax_drop = "none"\n'
    head = 'model = "model.onnx"\ndata = { path = "calib.npz", labels = "label" }\n'
    (root / "recipe_ok.toml").write_text(head + 'output = "out/recipe.onnx"\n' + step)
    (root / "recipe_to_data.toml").write_text(head + 'output = "calib.npz"\n' + step)
    (root / "recipe_to_itself.toml").write_text(head + 'output = "recipe_to_itself.toml"\n' + step)
    (root / "recipe_escape.toml").write_text(head + 'output = "../escaped.onnx"\n' + step)
    (root / "recipe_absolute.toml").write_text(head + f'output = "{root.parent / "absolute.onnx"}"\n' + step)
    (root / "recipe_folder.toml").write_text(head + 'output = "a_folder"\n' + step)
    (root / "recipe_seed.toml").write_text(head + 'output = "out/s.onnx"\nseed = -1\n' + step)


@dataclass
class Case:
    name: str
    args: list[str]
    expect: int
    may_write: list[str] = field(default_factory=list)  # paths (relative to the workspace) allowed to appear


PRUNE = ["--params", "0.7", "--strategy", "oneshot", "--max-drop", "none", "--quiet"]
DATA = ["--data", "calib.npz", "--labels", "label"]

CASES = [
    Case("plain prune", ["prune", "model.onnx", "-o", "out/a.onnx", *PRUNE], 0, ["out/a.onnx"]),
    Case("output is the model", ["prune", "model.onnx", "-o", "model.onnx", *PRUNE], 2),
    Case("output is the model via ..", ["prune", "model.onnx", "-o", "a_folder/../model.onnx", *PRUNE], 2),
    Case("output is the external weights", ["prune", "ext.onnx", "-o", "weights.bin", *PRUNE], 2),
    Case("output is the data file", ["prune", "model.onnx", "-o", "calib.npz", *DATA, *PRUNE], 2),
    Case("output is a symlink to the data", ["prune", "model.onnx", "-o", "calib_link.npz", *DATA, *PRUNE], 2),
    Case("output is a folder", ["prune", "model.onnx", "-o", "a_folder", *PRUNE], 2),
    Case("output names a folder (trailing /)", ["prune", "model.onnx", "-o", "newdir/", *PRUNE], 2),
    Case("output under a file", ["prune", "model.onnx", "-o", "a_file/x.onnx", *PRUNE], 2),
    Case("report is a file", ["prune", "model.onnx", "-o", "out/b.onnx", "--report", "a_file", *PRUNE], 2),
    Case("report is the data", ["prune", "model.onnx", "-o", "out/c.onnx", "--report", "calib.npz", *DATA, *PRUNE], 2),
    Case("model is a folder", ["prune", "a_folder", "-o", "out/d.onnx", *PRUNE], 2),
    Case("model does not exist", ["prune", "nope.onnx", "-o", "out/e.onnx", *PRUNE], 2),
    Case("model is not ONNX", ["prune", "calib.npz", "-o", "out/f.onnx", *PRUNE], 2),
    Case("NaN weight", ["prune", "nan_weight.onnx", "-o", "out/g.onnx", *PRUNE], 2),
    Case("NaN input", ["prune", "model.onnx", "-o", "out/h.onnx", "--data", "nan.npz", *PRUNE], 2),
    Case("labels out of range", ["prune", "model.onnx", "-o", "out/i.onnx", "--data", "labels_out_of_range.npz",
                                 "--labels", "label", *PRUNE], 2),
    Case("string labels", ["prune", "model.onnx", "-o", "out/j.onnx", "--data", "string_labels.npz",
                           "--labels", "label", *PRUNE], 2),
    Case("empty arrays", ["prune", "model.onnx", "-o", "out/k.onnx", "--data", "empty_arrays.npz", *PRUNE], 2),
    Case("0-byte data file", ["prune", "model.onnx", "-o", "out/l.onnx", "--data", "zero.npz", *PRUNE], 2),
    Case("text file as data", ["prune", "model.onnx", "-o", "out/m.onnx", "--data", "text.npz", *PRUNE], 2),
    Case(".npy as data", ["prune", "model.onnx", "-o", "out/n.onnx", "--data", "array.npy", *PRUNE], 2),
    Case("extra arrays of another size", ["prune", "model.onnx", "-o", "out/o.onnx", "--data", "extra.npz",
                                          "--labels", "label", *PRUNE], 0, ["out/o.onnx"]),
    Case("negative seed", ["prune", "model.onnx", "-o", "out/p.onnx", "--seed", "-1", *PRUNE], 2),
    Case("unreachable target", ["prune", "model.onnx", "-o", "out/q.onnx", "--macs", "0.01", *DATA,
                                "--max-drop", "0", "--strategy", "greedy", "--quiet"], 1, ["out/q.onnx"]),
    Case("in place, external data, from its folder", ["prune", "ext.onnx", "--in-place", *PRUNE], 0,
         ["ext.onnx", "ext.onnx.data", "weights.bin"]),
    Case("recipe", ["run", "recipe_ok.toml", "--quiet"], 0, ["out/recipe.onnx"]),
    Case("recipe writes its data", ["run", "recipe_to_data.toml", "--quiet"], 2),
    Case("recipe writes itself", ["run", "recipe_to_itself.toml", "--quiet"], 2),
    Case("recipe escapes its folder", ["run", "recipe_escape.toml", "--quiet"], 2),
    Case("recipe writes an absolute path outside", ["run", "recipe_absolute.toml", "--quiet"], 2),
    Case("recipe output is a folder", ["run", "recipe_folder.toml", "--quiet"], 2),
    Case("recipe with a negative seed", ["run", "recipe_seed.toml", "--quiet"], 2),
    Case("sensitivity report is a file", ["sensitivity", "model.onnx", *DATA, "--report", "a_file"], 2),
    Case("bench a model with itself", ["bench", "model.onnx", "model.onnx"], 2),
]


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.parent.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write every result as JSON")
    args = parser.parse_args()
    command = _pyprune()
    rows, failures = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        outer = Path(tmp)
        root = outer / "work"
        root.mkdir()
        build(root)
        for case in CASES:
            before = snapshot(root)
            start = time.perf_counter()
            proc = subprocess.run(command + case.args, cwd=root, capture_output=True, text=True, timeout=600)
            seconds = time.perf_counter() - start
            after = snapshot(root)
            changed = sorted(k for k in before if after.get(k) != before[k])
            appeared = sorted(set(after) - set(before))
            allowed = set(case.may_write)
            touched = [k for k in changed + appeared if k not in allowed
                       and not (case.may_write and any(k.startswith(a.split(".")[0]) for a in allowed))]
            problems = []
            if proc.returncode not in DOCUMENTED:
                problems.append(f"undocumented exit {proc.returncode}")
            if proc.returncode != case.expect:
                problems.append(f"exit {proc.returncode}, expected {case.expect}")
            if "Traceback" in proc.stderr:
                problems.append("traceback")
            if touched:
                problems.append(f"touched {touched}")
            failures += bool(problems)
            line = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            rows.append({"case": case.name, "exit": proc.returncode, "expected": case.expect, "ok": not problems,
                         "problems": problems, "seconds": round(seconds, 2), "stderr": line[:160]})
            # a case that wrote where it may write is undone, so later cases start from the same inputs
            for k in appeared:
                (root / k).unlink(missing_ok=True)
            if case.name.startswith("in place"):
                build_ext = root / "ext.onnx"
                for p in root.glob("ext.onnx*"):
                    p.unlink()
                onnx.save_model(mlp(seed=1), build_ext, save_as_external_data=True, all_tensors_to_one_file=True,
                                location="weights.bin", size_threshold=0)
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  exit  expected  ok   s     stderr")
    for r in rows:
        print(f"{r['case']:<{width}}  {r['exit']:>4}  {r['expected']:>8}  {'yes' if r['ok'] else 'NO':<3} "
              f"{r['seconds']:>5.1f}  {r['stderr'][:90]}")
        for problem in r["problems"]:
            print(f"{'':<{width}}  !! {problem}")
    print(f"{len(rows) - failures}/{len(rows)} cases as documented; exit codes seen: "
          f"{sorted({r['exit'] for r in rows})}; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
