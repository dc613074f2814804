"""Reports: the files a run writes, their before/after table, frozen groups, process figures and
search path, and the history's JSON round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pyprune.data import Dataset
from pyprune.graph import load
from pyprune.report import Figures, History, HistoryEntry, Report
from pyprune.targets import MACs

from _models import gemm_mlp  # noqa: E402  (tests/ is on sys.path, see conftest.py)
from _search import Search  # noqa: E402

FILES = ["history.json", "metric_vs_cost.png", "report.json", "report.md"]


def entry(step: int, metric: float | None, macs: int, **kw) -> HistoryEntry:
    values = dict(step=step, action=f"step {step}", removed={"g": [step]} if step else {}, metric=metric,
                  loss=0.1 * step, params=1000 - 100 * step, macs=macs, nonzeros=900 - 100 * step,
                  latency_ms=None, evaluations=3 * step, seconds=0.5 * step)
    return HistoryEntry(**{**values, **kw})


def handmade(**kw) -> Report:
    history = History()
    for e in (entry(0, 0.9, 4000), entry(1, 0.88, 3000, latency_ms=1.25), entry(2, None, 2000)):
        history.add(e)
    values = dict(
        strategy="greedy", granularity="channel", importance="l2", target="MACs <= 0.5 x original",
        constraint="accuracy may drop at most 0.05", metric_name="accuracy",
        before=Figures(1000, 900, 4000, 5000, 2.0, 0.9), after=Figures(800, 700, 2000, 4000, 1.0, 0.875),
        met=True, interrupted=False, statement="Target reached.", evaluations=6, recovery_runs=2,
        seconds=1.5, history=history, frozen={"head": "reaches the graph output 'y'"},
        removed={"g": 2, "h": 0}, settings={"seed": 0, "limits": {"skip": ["x"]}}, verified=True,
        max_output_error=2e-7, test={"test": Figures(800, 700, 2000, 4000, None, 0.81)},
    )
    return Report(**{**values, **kw})


def test_markdown_has_the_table_frozen_groups_and_process_figures():
    md = handmade().markdown()
    assert "**Target reached.**" in md
    assert "| parameters | 1,000 | 800 | 0.800 |" in md
    assert "| non-zero parameters | 900 | 700 | 0.778 |" in md
    assert "| MACs per sample | 4,000 | 2,000 | 0.500 |" in md
    assert "| file size (bytes) | 5,000 | 4,000 | 0.800 |" in md
    assert "| latency (ms) | 2.000 | 1.000 | 0.500 |" in md
    assert "| accuracy | 0.9000 | 0.8750 | -0.0250 |" in md
    assert "| `head` | reaches the graph output 'y' |" in md
    assert "| `g` | 2 |" in md and "`h`" not in md  # groups with nothing removed are not listed
    assert "- candidate evaluations: 6" in md and "- recovery runs (statistics re-estimation): 2" in md
    assert "- wall time: 1.50 s" in md and "- committed steps: 2" in md
    assert "equals the masked evaluation: yes (max output difference 2e-07)" in md
    assert "| test | 0.8100 |" in md
    assert "| 1 | step 1 | 0.8800 | 900 | 3,000 | 1.250 | 3 | 0.50 |" in md
    assert "| 2 | step 2 | - | 800 | 2,000 | - | 6 | 1.00 |" in md
    assert "![metric vs cost](metric_vs_cost.png)" in md


def test_optional_rows_are_left_out():
    report = handmade(before=Figures(10, 10, 0, 100, None, None), after=Figures(5, 5, 0, 50, 1.0, None),
                      frozen={}, removed={}, verified=None, test=None, synthetic_data=True)
    md = report.markdown()
    assert "latency" not in report.table() and "accuracy |" not in report.table()
    assert "| MACs per sample | 0 | 0 | - |" in md  # no ratio of nothing
    assert "Frozen" not in md and "## Removed" not in md and "Held-out" not in md
    assert "equals the masked evaluation" not in md
    assert "(on synthetic data)" in md


def test_unverified_model_is_flagged():
    assert "equals the masked evaluation: NO" in handmade(verified=False).markdown()


def test_write_all_files_atomically(tmp_path):
    report = handmade()
    out = tmp_path / "new" / "dir"
    files = report.write(out)
    assert sorted(p.name for p in out.iterdir()) == FILES  # no temp files left
    assert {k: p.name for k, p in files.items()} == {"markdown": "report.md", "json": "report.json",
                                                     "history": "history.json", "plot": "metric_vs_cost.png"}
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(files["json"].read_text())
    assert saved == report.to_dict()
    assert saved["before"]["macs"] == 4000 and saved["after"]["metric"] == 0.875
    assert saved["frozen"] == {"head": "reaches the graph output 'y'"}
    assert saved["test"]["test"]["metric"] == 0.81
    assert saved["history"] == json.loads(files["history"].read_text())
    report.write(out)  # overwriting is fine
    assert sorted(p.name for p in out.iterdir()) == FILES


def test_json_turns_numpy_and_non_finite_values_into_plain_json():
    report = handmade(seconds=np.float64(2.5), max_output_error=math.inf,
                      settings={"ratios": np.array([0.5, 0.25]), "n": np.int64(3), "bad": math.nan})
    data = json.loads(report.to_json())
    assert data["seconds"] == 2.5 and data["max_output_error"] is None
    assert data["settings"] == {"ratios": [0.5, 0.25], "n": 3, "bad": None}


def test_history_round_trip(tmp_path):
    history = handmade().history
    back = History.from_json(history.to_json())
    assert back.entries == history.entries
    path = history.write(tmp_path / "h.json")
    assert History.read(path).entries == history.entries
    assert len(back) == 3 and back[1].latency_ms == 1.25 and [e.step for e in back] == [0, 1, 2]
    with pytest.raises(ValueError, match="JSON object"):
        History.from_list([1])


def test_str_is_the_statement_and_table():
    text = str(handmade())
    assert text.splitlines()[0] == "Target reached."
    assert "| MACs per sample | 4,000 | 2,000 | 0.500 |" in text
    assert "6 evaluations, 1.50 s" in text
    assert "committed step" in text and "report.details()" in text  # where the search path is
    details = handmade().details()
    assert "search path:" in details and all(e.action in details for e in handmade().history)


def test_report_of_a_real_search(tmp_path):
    """A search's report: frozen output layer with its reason, removed units, the path it took."""
    model = load(gemm_mlp((10, 12, 3), seed=2))
    inputs = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    result = Search("greedy", model, Dataset({"x": inputs}), target=MACs(0.6), max_drop=None, quiet=True,
                          measure_latency=False, step=2).run()
    report = result.report
    files = report.write(tmp_path)
    md = files["markdown"].read_text()
    frozen = next(iter(report.frozen))
    assert "graph output" in report.frozen[frozen] and f"| `{frozen}` |" in md
    assert report.after.macs == result.model.macs() <= 0.6 * model.macs()
    assert report.before.params == model.params() and report.after.params == result.model.params()
    assert report.evaluations > 0 and report.met and report.verified
    history = History.read(files["history"])
    assert history.entries == result.history.entries
    assert history[0].action == "start" and history[0].macs == model.macs()
    assert history[-1].macs == report.after.macs
    removed = sum(len(v) for e in history for v in e.removed.values()) - sum(
        len(v) for e in history for v in e.restored.values())
    assert removed == sum(report.removed.values()) == 12 - result.model.weight(
        result.model.nodes[0].input[1]).shape[1]
    assert f"- candidate evaluations: {report.evaluations}" in md
