"""``pyprune demo --quick``: offline, from the packaged model and data, through the console script."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import pyprune
from pyprune.app.demo import DEMO_MACS, DEMO_MAX_DROP, DEMO_STRATEGIES
from pyprune.graph import load

from _cli import cli  # noqa: E402  (tests/ is on sys.path, see conftest.py)

DATA_DIR = Path(pyprune.__file__).parent / "assets"


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"input": x})[0].argmax(axis=1) == y).mean())


def test_quick_demo_prunes_three_ways_and_writes_everything(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # Run from an unrelated folder: the model and data must come from the installed package.
    proc = cli("demo", "--quick", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    header = next(line for line in proc.stdout.splitlines() if line.startswith("strategy"))
    assert header.split() == ["strategy", "accuracy", "params", "MACs", "latency", "(ms)",
                              "evaluations", "time", "(s)"]
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()
            if line.split() and line.split()[0] in ("original",) + DEMO_STRATEGIES}
    assert set(rows) == {"original", *DEMO_STRATEGIES}
    assert str(out) in proc.stdout

    data = np.load(DATA_DIR / "digits.npz")
    x_cal, y_cal = data["input"], data["label"]
    original = load(DATA_DIR / "digits_mlp.onnx")
    baseline = _accuracy(DATA_DIR / "digits_mlp.onnx", x_cal, y_cal)
    for strategy in DEMO_STRATEGIES:
        path = out / f"digits_mlp.{strategy}.onnx"
        onnx.checker.check_model(onnx.load(path), full_check=True)
        pruned = load(path)
        assert pruned.macs() <= original.macs()
        # the table shows the written model's figures
        numbers = [int(t.replace(",", "")) for t in rows[strategy].split() if t.replace(",", "").isdigit()]
        assert pruned.params() in numbers and pruned.macs() in numbers
        # the constraint held on the data the search was judged on
        assert _accuracy(path, x_cal, y_cal) >= baseline - DEMO_MAX_DROP - 1e-9
        # "target not met" appears exactly when the MACs target was missed
        missed = pruned.macs() > DEMO_MACS * original.macs()
        assert ("target not met" in rows[strategy]) == missed
        report = out / strategy
        assert {"report.md", "report.json", "metric_vs_cost.png"} <= {p.name for p in report.iterdir()}

    summary = (out / "README.md").read_text()
    assert "| strategy | accuracy |" in summary and "search_paths.png" in summary
    assert (out / "search_paths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_refuses_an_output_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    proc = cli("demo", "--quick", "--out", blocker)
    assert proc.returncode == 2
    assert proc.stderr.startswith("pyprune: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert blocker.read_text() == "a file, not a folder"


def test_quick_demo_runs_a_smaller_search(tmp_path: Path) -> None:
    from pyprune.app.demo import QUICK_SEARCH, run_demo

    run_demo(tmp_path / "quick", quick=True, quiet=True)
    for strategy, options in QUICK_SEARCH.items():
        settings = json.loads((tmp_path / "quick" / strategy / "report.json").read_text())["settings"]["search"]
        assert {k: settings[k] for k in options} == options
