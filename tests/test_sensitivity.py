"""Sensitivity analysis: each value is the metric of that group pruned alone, checked against the
physically pruned model run in a plain ONNX Runtime session; files, allocation and the one-shot
cut that applies it."""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyprune
from pyprune import importance, metrics
from pyprune.data import Dataset
from pyprune.graph import DependencyGraph, Model, load
from pyprune.options import Limits
from pyprune.search import PruningProblem, Sensitivity, sensitivity
from pyprune.surgery import remove_layers, remove_units

from _models import CATALOGUE, gemm_mlp, random_inputs, transformer_ffn  # noqa: E402  (tests/ is on sys.path)

RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)


def run(model: Model, x: np.ndarray | dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, x if isinstance(x, dict) else {model.input_names[0]: x})


@pytest.fixture(scope="module")
def mlp() -> tuple[Model, Dataset, np.ndarray]:
    model = load(gemm_mlp((12, 16, 10, 4), seed=3, trans_b=(1,)))  # two prunable groups: 16 and 10 units
    x = np.random.default_rng(0).standard_normal((160, 12)).astype(np.float32)
    labels = run(model, x)[0].argmax(axis=1)
    labels[::7] = (labels[::7] + 1) % 4  # a baseline below 1, so drops and gains are both possible
    return model, Dataset({"x": x}, labels), x


@pytest.fixture(scope="module")
def table(mlp) -> Sensitivity:
    model, data, _ = mlp
    return sensitivity(model, data, ratios=RATIOS, quiet=True)


def pruned_alone(model: Model, group: str, n: int) -> Model:
    """The model with the ``n`` lowest-scored units of ``group`` removed, made without the masked
    session: scores from the importance module, removal by surgery."""
    graph = DependencyGraph(model)
    order = np.argsort(importance.group_scores(model, graph.group(group), "l2"), kind="stable")
    return remove_units(model, {group: np.sort(order[:n])}, graph) if n else model


def physical_accuracy(model: Model, x: np.ndarray, labels: np.ndarray, group: str, n: int) -> float:
    return float(np.mean(run(pruned_alone(model, group, n), x)[0].argmax(axis=1) == labels))


def test_table_has_a_row_per_prunable_group_and_a_value_per_ratio(mlp, table):
    model, data, _ = mlp
    prunable = {g.id: g.size for g in DependencyGraph(model).groups if g.prunable}
    assert {r.id: r.size for r in table.rows} == prunable
    assert len(table.frozen) == 1  # the last Gemm reaches the graph output
    assert table.ratios == RATIOS
    assert table.metric_name == "accuracy" and table.granularity == "channel"
    for r in table.rows:
        assert len(r.values) == len(r.counts) == len(r.macs) == len(r.params) == len(RATIOS)
        # a group always keeps one unit
        assert list(r.counts) == [min(math.floor(q * r.size), r.size - 1) for q in RATIOS]
        assert r.values[0] == table.baseline and r.macs[0] == 1.0
        assert all(a > b for a, b in zip(r.macs[1:], r.macs[2:])), "more pruning costs fewer MACs"
    # only the distinct non-zero counts are evaluated
    assert table.evaluations == sum(len(set(r.counts) - {0}) for r in table.rows)


def test_values_equal_the_physically_pruned_model(mlp, table):
    model, data, x = mlp
    assert table.baseline == pytest.approx(float(np.mean(run(model, x)[0].argmax(axis=1) == data.labels)))
    for r in table.rows:
        for n, value in zip(r.counts, r.values):
            assert value == pytest.approx(physical_accuracy(model, x, data.labels, r.id, n), abs=1e-12), (r.id, n)


def test_without_labels_the_metric_is_agreement(mlp):
    model, _, x = mlp
    result = sensitivity(model, Dataset({"x": x}), ratios=(0.5,), quiet=True)
    assert result.metric_name == "agreement" and result.baseline == 1.0
    for r in result.rows:
        assert r.values[0] < 1.0  # half of a group changes some predictions


def test_without_data_it_says_the_data_is_synthetic(mlp):
    result = sensitivity(mlp[0], None, ratios=(0.5,), quiet=True)
    assert result.synthetic_data and result.metric_name == "agreement"
    assert "synthetic data" in str(result) and result.to_dict()["synthetic_data"] is True


def test_explicit_metric_and_lower_is_better(mlp):
    model, data, _ = mlp
    result = sensitivity(model, data, metric="mse", ratios=(0.25, 0.75), quiet=True)
    assert result.direction == "lower" and result.baseline == 0.0
    for r in result.rows:
        assert all(v > 0 for v in r.values)
        assert result.drop(r.values[0]) == r.values[0]


def test_str_lists_every_group_and_the_frozen_ones(table):
    text = str(table)
    for r in table.rows:
        assert r.id in text
    assert "25%" in text and "not analysed" in text
    assert f"{table.baseline:.4f}" in text


def test_write_files(table, tmp_path):
    files = table.write(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sensitivity.json", "sensitivity.md",
                                                                   "sensitivity.png"]
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(files["json"].read_text())
    assert saved == table.to_dict()
    assert saved["rows"][0]["values"] == list(table.rows[0].values)
    md = files["markdown"].read_text()
    for r in table.rows:
        assert f"| {r.id} | {r.size} |" in md
    back = Sensitivity.read(files["json"])
    assert back == table and back.allocate(0.05) == table.allocate(0.05)
    with pytest.raises(ValueError, match="not a sensitivity analysis"):
        Sensitivity.from_dict({"rows": []})


@pytest.mark.parametrize("max_drop, relative", [(0.0, False), (0.05, False), (0.2, False), (0.1, True)])
def test_allocate_respects_max_drop(mlp, table, max_drop, relative):
    model, data, x = mlp
    allocated = table.allocate(max_drop, relative=relative)
    assert set(allocated) == {r.id for r in table.rows}
    threshold = table.baseline * (1 - max_drop) if relative else table.baseline - max_drop
    for r in table.rows:
        ratio = allocated[r.id]
        assert ratio in RATIOS
        i = RATIOS.index(ratio)
        # the group alone at its ratio, and at every smaller one, stays within max_drop ...
        for n in r.counts[: i + 1]:
            assert physical_accuracy(model, x, data.labels, r.id, n) >= threshold - 1e-12
        # ... and the next ratio does not
        if i + 1 < len(RATIOS):
            assert r.values[i + 1] < threshold


def test_allocate_needs_a_constraint(table):
    with pytest.raises(ValueError, match="max_drop"):
        table.allocate(None)  # type: ignore[arg-type]


def test_oneshot_applies_the_allocated_ratios(mlp, table):
    model, data, x = mlp
    allocated = table.allocate(0.2)
    assert any(allocated.values())
    result = pyprune.prune(model, data, strategy="oneshot", ratios=allocated, max_drop=None, quiet=True,
                           measure_latency=False, recovery=False, holdout=0.0)
    expected = {r.id: r.counts[RATIOS.index(allocated[r.id])] for r in table.rows}
    assert result.report.removed == {k: v for k, v in expected.items() if v}
    assert result.met and result.report.verified
    # with recovery off the shipped model is exactly the allocated cut judged alone per group
    assert result.model.macs() < model.macs()
    assert result.metric == pytest.approx(
        float(np.mean(run(result.model, x)[0].argmax(axis=1) == data.labels)))


def test_oneshot_with_ratios_and_a_target_scales_them_down(mlp, table):
    model, data, _ = mlp
    ratios = {r.id: 0.75 for r in table.rows}
    result = pyprune.prune(model, data, strategy="oneshot", ratios=ratios, target=pyprune.MACs(0.9),
                           max_drop=None, quiet=True, measure_latency=False)
    assert result.met
    assert 0 < sum(result.report.removed.values()) < sum(r.counts[RATIOS.index(0.75)] for r in table.rows)


def test_oneshot_ratios_are_checked(mlp):
    model, data, _ = mlp
    with pytest.raises(ValueError, match="cannot be pruned"):
        pyprune.prune(model, data, strategy="oneshot", ratios={"nope": 0.5}, quiet=True)
    gid = DependencyGraph(model).groups[0].id
    with pytest.raises(ValueError, match=r"cannot be pruned: .* \(skipped on request\)"):
        pyprune.prune(model, data, strategy="oneshot", ratios={gid: 0.5}, limits=Limits(skip=(gid,)), quiet=True)
    # a ratio of 0 for a group the cut leaves alone anyway is fine
    result = pyprune.prune(model, data, strategy="oneshot", ratios={gid: 0.0}, limits=Limits(skip=(gid,)),
                           max_drop=None, quiet=True, measure_latency=False)
    assert result.report.removed == {}
    with pytest.raises(ValueError, match="fraction"):
        pyprune.prune(model, data, strategy="oneshot", ratios={gid: 1.5}, quiet=True)
    with pytest.raises(ValueError, match="local"):
        pyprune.prune(model, data, strategy="oneshot_global", ratios={gid: 0.5}, quiet=True)


def test_skip_leaves_a_group_out(mlp):
    model, data, _ = mlp
    first = DependencyGraph(model).groups[0].id
    result = sensitivity(model, data, ratios=(0.5,), skip=[first], quiet=True)
    assert first not in {r.id for r in result.rows}
    assert result.frozen[first] == "skipped on request"


@pytest.mark.parametrize("kwargs, error, needle", [
    ({"granularity": "weight"}, ValueError, "'channel' or 'layer'"),
    ({"ratios": (0.5, 1.5)}, ValueError, "fraction in [0, 1]"),
    ({"ratios": (0.5, 0.5)}, ValueError, "distinct"),
    ({"ratios": ()}, TypeError, "non-empty"),
    ({"ratios": 0.5}, TypeError, "non-empty"),
    ({"importance": "best"}, ValueError, "unknown importance"),
    ({"metric": "nonsense"}, ValueError, "unknown metric"),
])
def test_bad_arguments(mlp, kwargs, error, needle):
    model, data, _ = mlp
    with pytest.raises(error, match=__import__("re").escape(needle)):
        sensitivity(model, data, quiet=True, **kwargs)


def test_ctrl_c_returns_the_groups_measured_so_far(mlp, table, monkeypatch):
    model, data, _ = mlp
    trials, calls = PruningProblem.trials, []

    def interrupting(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # in the second group (with the local executor, a batch per group)
            raise KeyboardInterrupt
        return trials(self, *args, **kwargs)

    monkeypatch.setattr(PruningProblem, "trials", interrupting)
    result = sensitivity(model, data, ratios=RATIOS, quiet=True)
    assert result.interrupted and len(result.rows) == 1
    assert result.rows[0] == table.rows[0]
    assert "interrupted" in str(result) and "Interrupted" in result.markdown()
    assert result.to_dict()["interrupted"] is True


def test_progress_bar_unless_quiet(mlp, capsys):
    model, data, _ = mlp
    sensitivity(model, data, ratios=(0.5,), quiet=False)
    assert "sensitivity" in capsys.readouterr().err
    sensitivity(model, data, ratios=(0.5,), quiet=True)
    assert capsys.readouterr().err == ""


def test_layers_each_removed_alone_equal_physical_removal(tmp_path):
    model = load(transformer_ffn())
    x = np.random.default_rng(1).standard_normal((48, 4, 6)).astype(np.float32)
    result = sensitivity(model, Dataset({"x": x}), granularity="layer", metric="mse", quiet=True)
    layers = {layer.id: layer for layer in DependencyGraph(model).layers if layer.prunable}
    assert [r.id for r in result.rows] == list(layers) and result.ratios == (1.0,)
    reference = run(model, x)
    mse = metrics.relative_mse()
    for r in result.rows:
        assert r.kind == "layer" and r.counts == (1,)
        assert r.values[0] == pytest.approx(mse(run(remove_layers(model, [r.id]), x), reference), rel=1e-5)
        assert r.macs[0] == pytest.approx(1 - layers[r.id].macs / model.macs())
        assert r.params[0] == pytest.approx(1 - layers[r.id].params / model.params())
    assert set(result.allocate(1e9).values()) == {1.0}
    assert set(result.allocate(0.0).values()) == {0.0}
    text = str(result)
    assert "removed" in text and all(layer in text for layer in layers)
    result.write(tmp_path)
    assert (tmp_path / "sensitivity.png").stat().st_size > 0


def physical_mse(model: Model, feeds: dict[str, np.ndarray], group: str, n: int) -> float:
    return metrics.relative_mse()(run(pruned_alone(model, group, n), feeds), run(model, feeds))


@pytest.mark.parametrize("name", ["conv_stack", "flatten_gemm", "residual_nested", "se_in_residual", "split_slice",
                                  "gemm_variants"])
def test_generated_models_match_physical_removal(name):
    model = load(CATALOGUE[name].build())
    feeds = random_inputs(model.proto, batch=16, seed=2)
    result = sensitivity(model, Dataset(feeds), metric="mse", ratios=(0.3, 0.7), quiet=True)
    assert len(result.rows) == CATALOGUE[name].prunable
    for r in result.rows:
        for n, value in zip(r.counts, r.values):
            assert value == pytest.approx(physical_mse(model, feeds, r.id, n), rel=1e-4, abs=1e-9), (r.id, n)


@settings(max_examples=6, deadline=None)
@given(widths=st.lists(st.integers(2, 9), min_size=1, max_size=3), ratios=st.sets(st.floats(0.05, 1.0), min_size=1,
                                                                                  max_size=3))
def test_any_mlp_matches_physical_removal(widths, ratios):
    model = load(gemm_mlp((5, *widths, 3), seed=len(widths)))
    feeds = {"x": np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32)}
    result = sensitivity(model, Dataset(feeds), metric="mse", ratios=tuple(ratios), quiet=True)
    assert [r.size for r in result.rows] == widths
    for r in result.rows:
        assert r.counts == tuple(min(math.floor(q * r.size + 1e-9), r.size - 1) for q in sorted(ratios))
        for n, value in zip(r.counts, r.values):
            assert value == pytest.approx(physical_mse(model, feeds, r.id, n), rel=1e-4, abs=1e-9)
